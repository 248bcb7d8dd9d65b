"""A tracked run on the embedded SQLite store: params, metrics, diagnostics, artifacts and plots are
read back through ``MlflowClient`` and compared with independently computed values."""

from __future__ import annotations

import math
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch
import yaml
from mlflow import MlflowClient
from test_tracking_support import TASKS, job_config, train_result, write_features

from aptrank.pipeline.mlflow_store import ENV_URI, resolve_tracking_uri
from aptrank.pipeline.provenance import config_hash
from aptrank.pipeline.tracking import Thinned, TrackedRun

STEPS = 30
EVERY = 2
LAYERS = 20  # 20 layers x 3 tasks of rAU: > 1000 metrics in one epoch, so log_batch flushes mid-epoch
WINDOW = {"train": "2022-04-08..2022-04-28", "test": "2022-04-30"}


def stats(step: int) -> dict[str, Any]:
    """Diagnostics shaped like apt.MultiTaskOptimizer's: ``grad_cos/task<i>_task<j>``,
    ``apt/instant_share``, ``adatask/rau/<param>/task<k>``; floats, a 0-d tensor, a NaN and a bool."""
    out: dict[str, Any] = {
        "grad_cos/task0_task1": math.cos(step / 10),
        "grad_cos/task0_task2": -0.5 + step / 100,
        "grad_cos/task1_task2": 0.25,
        "apt/instant_share": 1.0 / step,
        "apt/cos_grad_update": torch.tensor(0.5 + step / 100),
        "grad_norm/task0": float("nan") if step == 4 else 2.0 * step,
        "clipped": True,
    }
    out.update(
        {f"adatask/rau/layer{l}.weight/task{k}": (l + k + step) / 100 for l in range(LAYERS) for k in range(len(TASKS))}
    )
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tracking")
    spec = write_features(root / "features")
    cfg = job_config("track-job")
    result = train_result(root / "run", {"click": 0.71, "like": 0.66, "long_view": float("nan")}, spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_URI, raising=False)
        with TrackedRun(
            cfg, root / "work", features_dir=root / "features", data_window=WINDOW, diagnostics_every=EVERY
        ) as run:
            callbacks = run.callbacks()
            for step in range(1, STEPS + 1):
                callbacks.on_diagnostics(step, stats(step))
                if step % 10 == 0:
                    callbacks.on_epoch_end(step // 10 - 1, result.history[step // 10 - 1])
            artifacts = run.log_result(result)
    client = MlflowClient(run.uri)
    return {
        "root": root,
        "cfg": cfg,
        "spec": spec,
        "result": result,
        "run": run,
        "client": client,
        "mlrun": client.get_run(run.run_id),
        "artifacts": artifacts,
    }


def test_default_store_is_sqlite_and_artifacts_in_workdir(tracked: dict[str, Any]) -> None:
    work = tracked["root"] / "work"
    assert tracked["run"].uri == f"sqlite:///{work.resolve()}/mlflow.db"
    assert (work / "mlflow.db").is_file()
    assert tracked["mlrun"].info.artifact_uri.startswith((work / "mlartifacts").resolve().as_uri())
    assert (work / "mlartifacts").is_dir() and any((work / "mlartifacts").rglob("config.yaml"))
    assert tracked["mlrun"].info.status == "FINISHED"


def test_env_uri_wins_over_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_URI, "http://tracking.example:5000")
    assert resolve_tracking_uri("sqlite:///other.db", tmp_path) == "http://tracking.example:5000"
    monkeypatch.delenv(ENV_URI)
    assert resolve_tracking_uri("sqlite:///other.db", tmp_path) == "sqlite:///other.db"


def test_params(tracked: dict[str, Any]) -> None:
    params = tracked["mlrun"].data.params
    cfg = tracked["cfg"]
    for key, value in cfg.flat().items():
        assert params[key] == value, key
    assert params["seed"] == "3"
    assert params["config.hash"] == config_hash(cfg)
    assert params["feature_spec.hash"] == tracked["spec"].hash
    assert params["data_window.train"] == WINDOW["train"] and params["data_window.test"] == WINDOW["test"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
    ).stdout.strip()
    assert params["git.commit"] in (head, head + "-dirty")
    assert tracked["mlrun"].data.tags["mlflow.source.git.commit"] == params["git.commit"]
    for pkg in ("torch", "torchrec", "polars", "mlflow", "onnxruntime"):
        assert params[f"version.{pkg}"] == metadata.version(pkg)


def test_epoch_metrics_have_epoch_steps(tracked: dict[str, Any]) -> None:
    client, run_id, hist = tracked["client"], tracked["run"].run_id, tracked["result"].history
    for task in TASKS:
        auc = client.get_metric_history(run_id, f"Epoch/valid/{task}/auc")
        assert [(m.step, m.value) for m in auc] == [(e, r["valid"]["tasks"][task]["auc"]) for e, r in enumerate(hist)]
        loss = client.get_metric_history(run_id, f"Epoch/train_loss/{task}")
        assert [m.value for m in sorted(loss, key=lambda m: m.step)] == [r["train_loss"][task] for r in hist]
    assert [m.value for m in client.get_metric_history(run_id, "Epoch/samples_per_s")] == [426.0, 427.0, 428.0]
    assert client.get_metric_history(run_id, "Epoch/epoch") == []


def test_diagnostics_logged_every_nth_step_in_batches(tracked: dict[str, Any]) -> None:
    client, run_id = tracked["client"], tracked["run"].run_id
    steps = list(range(EVERY, STEPS + 1, EVERY))
    cos = sorted(client.get_metric_history(run_id, "diag/grad_cos/task0_task1"), key=lambda m: m.step)
    assert [m.step for m in cos] == steps
    assert [m.value for m in cos] == pytest.approx([math.cos(s / 10) for s in steps], abs=1e-12)
    tensor = sorted(client.get_metric_history(run_id, "diag/apt/cos_grad_update"), key=lambda m: m.step)
    assert [m.value for m in tensor] == pytest.approx([0.5 + s / 100 for s in steps], abs=1e-6)
    rau = client.get_metric_history(run_id, f"diag/adatask/rau/layer{LAYERS - 1}.weight/task2")
    assert len(rau) == len(steps)
    norm = client.get_metric_history(run_id, "diag/grad_norm/task0")
    assert sorted(m.step for m in norm) == [s for s in steps if s != 4]  # the NaN is not logged
    assert client.get_metric_history(run_id, "diag/clipped") == []  # bools are not metrics


def test_plot_series_keep_what_was_logged(tracked: dict[str, Any]) -> None:
    series = tracked["run"].series
    steps = list(range(EVERY, STEPS + 1, EVERY))
    assert series["apt/instant_share"] == [(s, 1.0 / s) for s in steps]
    assert len(series) == 6 + LAYERS * len(TASKS)  # 7 keys per step minus the bool, plus rAU


def test_thinned_series_stay_evenly_spaced_and_bounded() -> None:
    t = Thinned(capacity=8)
    for step in range(100):
        t.add(step, float(step))
    assert [s for s, _ in t.points] == [0, 16, 32, 48, 64, 80, 96]
    assert t.stride == 16


def test_final_metrics(tracked: dict[str, Any]) -> None:
    metrics = tracked["mlrun"].data.metrics
    test = tracked["result"].evaluation["test"]
    assert metrics["final/test/click/auc"] == test["tasks"]["click"]["auc"]
    assert metrics["final/test/like/logloss"] == test["tasks"]["like"]["logloss"]
    assert metrics["final/valid/mean_auc"] == tracked["result"].evaluation["valid"]["mean_auc"]
    assert metrics["final/test/popularity/click/auc"] == 0.55
    assert metrics["final/delta_m_auc"] == 1.25
    assert metrics["final/best_epoch"] == 2
    assert metrics["final/train_seconds"] == 4.5
    assert "final/test/long_view/auc" not in metrics  # NaN: not logged, not faked
    assert "final/test/popularity/click/calibration" not in metrics


def test_artifacts_read_back(tracked: dict[str, Any], tmp_path: Path) -> None:
    client, run_id = tracked["client"], tracked["run"].run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "feature_spec.json", "evaluation.json", "checkpoint", "plots"} <= top
    assert sorted(tracked["artifacts"]) == sorted(
        [
            "config.yaml",
            "feature_spec.json",
            "evaluation.json",
            "checkpoint/best_model.pt",
            "plots/learning_curves.png",
            "plots/grad_cosine.png",
            "plots/rau_histogram.png",
            "plots/instant_share.png",
        ]
    )
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    assert yaml.safe_load((local / "config.yaml").read_text()) == tracked["cfg"].to_dict()
    root = tracked["root"]
    assert (local / "feature_spec.json").read_bytes() == (root / "features" / "feature_spec.json").read_bytes()
    assert (local / "evaluation.json").read_bytes() == (root / "run" / "evaluation.json").read_bytes()
    state = torch.load(local / "checkpoint" / "best_model.pt", weights_only=True)
    assert torch.equal(state["w"], torch.arange(6, dtype=torch.float32))


def test_plots_are_png_images(tracked: dict[str, Any], tmp_path: Path) -> None:
    client, run_id = tracked["client"], tracked["run"].run_id
    local = Path(client.download_artifacts(run_id, "plots", str(tmp_path)))
    for png in ("learning_curves.png", "grad_cosine.png", "rau_histogram.png", "instant_share.png"):
        data = (local / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        image = matplotlib.image.imread(local / png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01, f"{png} is blank"


def test_failed_block_marks_run_failed_and_skips_empty_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URI, raising=False)
    cfg = job_config("fail-job")
    spec = write_features(tmp_path / "features")
    result = train_result(tmp_path / "run", {"click": 0.7, "like": 0.6, "long_view": 0.65}, spec, epochs=1)
    with TrackedRun(cfg, tmp_path / "work") as run:  # no diagnostics were logged
        logged = run.log_result(result)
    assert [p for p in logged if p.startswith("plots/")] == ["plots/learning_curves.png"]
    client = MlflowClient(run.uri)
    assert client.get_run(run.run_id).data.params["feature_spec.hash"] == spec.hash  # from evaluation.json
    with pytest.raises(RuntimeError, match="trainer blew up"), TrackedRun(cfg, tmp_path / "work") as failing:
        raise RuntimeError("trainer blew up")
    assert client.get_run(failing.run_id).info.status == "FAILED"


def test_diagnostics_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="diagnostics_every must be >= 1"):
        TrackedRun(job_config("bad"), tmp_path, diagnostics_every=0)
