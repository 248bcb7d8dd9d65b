"""`aptrank run`, the scheduled job, end to end as a real process: first model becomes champion,
its registered version is the whole scorer (the pasted follow-up command scores with the job's fusion
weights and no config; pyfunc predict gives the same numbers), the run follows MLflow's conventions
and carries the evaluation as served, a rerun on the same inputs makes no new version, a worse
challenger is refused (exit 3, champion unchanged), a better one is promoted, a concurrent run is
refused by the lock, bad config exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.tiny import CHEAP_TEACHER, CLI

ROOT = Path(__file__).resolve().parents[2]
BASE = [
    "model.embedding_dim=8",
    "model.expert_hidden=[32]",
    "model.tower_hidden=[8]",
    "model.ple_shared_experts=1",
    "train.epochs=1",
    "train.batch_size=1024",
    "train.threads=2",
    "gate.auc_tolerance=0.002",
    *CHEAP_TEACHER,
    "gate.floor_margin=-1",  # these few-step models compare with each other; floors: test_promotion.py
]
WEAK = [*BASE, "train.max_steps_per_epoch=4"]
WORSE = [*BASE, "train.max_steps_per_epoch=1", "mtl.lr=0.00001", "mtl.embedding_lr=0.00001"]
STRONG = [*BASE, "train.max_steps_per_epoch=30"]
FIRST: dict[str, dict] = {}
"""The first run's summary, for the tests that look at what it registered."""


def job(workdir: Path, features: Path | None, overrides: list[str]) -> tuple[int, dict]:
    cmd = [
        *CLI,
        "run",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--workdir",
        str(workdir),
        *[x for o in overrides for x in ("--set", o)],
    ]
    if features is not None:
        cmd += ["--set", f"data.features={features}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    return done.returncode, json.loads(lines[-1])


def versions(workdir: Path) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    return {str(v.version): dict(v.tags) for v in client.search_model_versions("name='kuairand-demo'")}


def champion(workdir: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    return str(client.get_registered_model("kuairand-demo").aliases["champion"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("job")


def test_first_run_with_etl_becomes_champion(workdir: Path) -> None:
    code, out = job(workdir, None, WEAK)
    assert code == 0, out
    FIRST["out"] = out
    assert out["gate"]["decision"] == "promoted" and out["created"] is True
    assert out["model_uri"] == "models:/kuairand-demo/1" and out["champion_uri"] == "models:/kuairand-demo@champion"
    assert set(out["metrics"]["test_auc"]) == {"click", "like", "finish"}
    assert champion(workdir) == "1"
    assert (workdir / "features" / "summary.json").is_file()


def test_pasted_follow_up_scores_with_the_jobs_weights_and_no_config(workdir: Path, tmp_path: Path) -> None:
    import mlflow.pyfunc

    out = FIRST["out"]
    command = out["follow_up"]["score"]
    assert "--tracking-uri sqlite:///" in command and "--config" not in command and "--weight" not in command
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # the console script `aptrank` of this checkout: the pasted text runs unchanged
    shell = f'aptrank() {{ "{sys.executable}" -m aptrank.pipeline.cli "$@"; }}; {command}'
    done = subprocess.run(
        ["bash", "-c", shell], env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "{'click': 1.0, 'like': 2.0, 'finish': 1.0} (registered with the model" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
    scored = pl.read_parquet(workdir / "scores.parquet")
    fused = scored["p_click"].cast(pl.Float64) + 2 * scored["p_like"].cast(pl.Float64) + scored["p_finish"]
    np.testing.assert_allclose(scored["score"].to_numpy(), fused.to_numpy(), rtol=0, atol=1e-6)

    mlflow.set_tracking_uri(out["tracking_uri"])
    try:
        model = mlflow.pyfunc.load_model(out["champion_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    rows = scored.head(500)
    raw = rows.select("user_id", "item_id", pl.col("ts").dt.replace_time_zone(None), "tab")  # MLflow: naive UTC
    predicted = model.predict(raw.to_pandas())
    for column in ("p_click", "p_like", "p_finish", "score"):
        np.testing.assert_allclose(predicted[column].to_numpy(), rows[column].to_numpy(), rtol=0, atol=1e-6)


def test_run_follows_mlflow_conventions_and_records_the_served_evaluation(workdir: Path) -> None:
    from mlflow import MlflowClient

    out = FIRST["out"]
    client = MlflowClient(out["tracking_uri"])
    run = client.get_run(out["run_id"])
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["kuairand-demo-test", "kuairand-demo-train", "kuairand-demo-valid"]
    digests = {d.dataset.digest for d in inputs.values()}
    assert len(digests) == 3 and all(len(d) == 16 for d in digests)
    assert {t.key: t.value for t in inputs["kuairand-demo-train"].tags} == {"mlflow.data.context": "train"}
    assert json.loads(inputs["kuairand-demo-test"].dataset.profile)["num_rows"] > 0
    tags = run.data.tags
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.name"].startswith("aptrank run --config")
    assert tags["mlflow.user"] and tags["mlflow.source.git.commit"]
    assert "served (test, snapshot as of" in tags["mlflow.note.content"]
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    metrics = run.data.metrics
    version = client.get_model_version("kuairand-demo", "1")
    served_auc = out["metrics"]["served_test_auc"]
    for task in ("click", "like", "finish"):
        assert metrics[f"served/test/{task}/auc"] == pytest.approx(served_auc[task], abs=1e-12)
        assert float(version.tags[f"aptrank.auc.{task}"]) == pytest.approx(served_auc[task], abs=1e-12)
        pit = metrics[f"final/test/{task}/auc"]
        assert float(version.tags[f"aptrank.pit_auc.{task}"]) == pytest.approx(pit, abs=1e-12)
        assert metrics[f"served_gap/test/{task}/auc"] == pytest.approx(served_auc[task] - pit, abs=1e-9)
    assert version.tags["aptrank.eval_features"] == "served"
    assert out["metrics"]["served_snapshot_cutoff"] < "2022-04-29T16:00:00.000Z"  # test_start, UTC
    assert "workflowType=machine_learning" in out["follow_up"]["ui_page"]


def test_rerun_on_same_inputs_makes_no_new_version(workdir: Path) -> None:
    code, out = job(workdir, None, WEAK)
    assert code == 0 and out["created"] is False
    assert list(versions(workdir)) == ["1"]


def test_worse_challenger_is_refused_and_champion_stays(workdir: Path) -> None:
    code, out = job(workdir, workdir / "features", WORSE)
    assert code == 3, out
    assert out["gate"]["decision"] == "refused"
    assert champion(workdir) == "1"
    tags = versions(workdir)["2"]
    assert tags["aptrank.gate.decision"] == "refused" and tags["aptrank.gate.champion_version"] == "1"


def test_better_challenger_is_promoted(workdir: Path) -> None:
    code, out = job(workdir, workdir / "features", STRONG)
    assert code == 0, out
    assert out["gate"]["decision"] == "promoted" and out["gate"]["champion_version"] == "1"
    assert champion(workdir) == "3"


def test_concurrent_run_is_refused_by_the_lock(workdir: Path) -> None:
    from aptrank.pipeline.lock import JobLock

    with JobLock(workdir, "kuairand-demo"):
        code, out = job(workdir, workdir / "features", STRONG)
    assert code == 1
    assert "lock" in out["error"].lower() and str(os.getpid()) in out["error"]


def test_bad_config_exits_2(workdir: Path) -> None:
    code, out = job(workdir, None, ["train.epoch=3"])
    assert code == 2 and "train.epoch" in out["error"]
