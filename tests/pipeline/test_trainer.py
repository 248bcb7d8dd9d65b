"""The trainer on the real KuaiRand sample: exact resume, non-finite loss handling, determinism,
config validation, and MMoE beating the popularity baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from aptrank.pipeline import checkpoint
from aptrank.pipeline.config import ConfigError, JobConfig, load_config
from aptrank.pipeline.trainer import NonFiniteLossError, TrainCallbacks, Trainer
from tests.tiny import CHEAP_TEACHER, CLI

TINY = [
    "model.arch=mmoe",
    "model.embedding_dim=4",
    "model.expert_hidden=[16]",
    "model.tower_hidden=[8]",
    "model.num_experts=2",
    "train.batch_size=512",
    "train.max_steps_per_epoch=6",
    "train.eval_batch_size=16384",
    "train.threads=1",
    "train.patience=10",
]


class Crash(RuntimeError):
    pass


def _cfg(*extra: str):
    return load_config(None, [*TINY, *extra])


def test_resume_after_kill_gives_the_uninterrupted_metrics(etl_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg("train.epochs=3", "seed=3", "mtl.method=pcgrad")
    full = Trainer(cfg, etl_dir, tmp_path / "full", progress=False).fit()

    def crash_after_first(epoch: int, record: dict) -> None:
        if epoch == 0:
            raise Crash("killed after epoch 0")

    with pytest.raises(Crash):
        Trainer(cfg, etl_dir, tmp_path / "cut", TrainCallbacks(on_epoch_end=crash_after_first), progress=False).fit()
    assert checkpoint.load(checkpoint.last_path(tmp_path / "cut"))["epoch"] == 0
    resumed_trainer = Trainer(cfg, etl_dir, tmp_path / "cut", progress=False)
    resumed_trainer.resume()
    assert resumed_trainer.start_epoch == 1
    resumed = resumed_trainer.fit()
    assert resumed.evaluation["test"] == full.evaluation["test"]
    assert [h["valid"] for h in resumed.history] == [h["valid"] for h in full.history]
    written = json.loads((tmp_path / "cut" / "evaluation.json").read_text())
    assert written["test"]["tasks"]["click"]["auc"] == pytest.approx(full.evaluation["test"]["tasks"]["click"]["auc"])


def test_same_seed_same_metrics_other_seed_differs(etl_dir: Path, tmp_path: Path) -> None:
    runs = [
        Trainer(_cfg("train.epochs=1", f"seed={s}"), etl_dir, tmp_path / f"r{i}", progress=False).fit()
        for i, s in enumerate((5, 5, 6))
    ]
    assert runs[0].evaluation["test"] == runs[1].evaluation["test"]
    assert runs[0].evaluation["test"] != runs[2].evaluation["test"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(etl_dir: Path, tmp_path: Path) -> None:
    trainer = _poisoned_trainer(_cfg("train.epochs=3", "seed=1"), etl_dir, tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step 0: non-finite loss for task\(s\) \['like'\]"):
        trainer.fit()
    _assert_last_checkpoint_is_finite_epoch_0(tmp_path / "nan")


def _poisoned_trainer(cfg: JobConfig, etl_dir: Path, out: Path, skipped_before: int | None = None) -> Trainer:
    """A trainer whose ``like`` tower weights turn NaN at every epoch's end (``skipped_before``: the
    skipped-step count the epoch record must show then)."""
    trainer: Trainer

    def poison(epoch: int, record: dict) -> None:
        if skipped_before is not None:
            assert record["skipped_steps"] == skipped_before
        with torch.no_grad():
            trainer.model.towers[1].out.weight.fill_(float("nan"))

    trainer = Trainer(cfg, etl_dir, out, TrainCallbacks(on_epoch_end=poison), progress=False)
    return trainer


def _assert_last_checkpoint_is_finite_epoch_0(out: Path) -> None:
    state = checkpoint.load(checkpoint.last_path(out))
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_config_is_validated_when_it_loads() -> None:
    with pytest.raises(ConfigError, match=r"train.epoch: unknown key"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="model.arch: unknown arch 'transformer'"):
        load_config(None, ["model.arch=transformer"])
    with pytest.raises(ConfigError, match="model.expert_hidden: expected a list"):
        load_config(None, ["model.expert_hidden=7"])
    with pytest.raises(ConfigError, match="mtl.method: unknown method 'nope'"):
        load_config(None, ["mtl.method=nope"])
    assert load_config(None).scoring.fold_rows is None
    assert load_config(None, ["scoring.fold_rows=0"]).scoring.fold_rows == 0
    for bad, rule in (("-1", "must be >= 0"), ("many", "expected an integer"), ("true", "expected an integer")):
        with pytest.raises(ConfigError, match=f"scoring.fold_rows: {rule}"):
            load_config(None, [f"scoring.fold_rows={bad}"])


def test_mmoe_beats_popularity_on_kuairand(etl_dir: Path, tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    cfg = load_config(demo, ["train.epochs=1", "train.threads=2", *CHEAP_TEACHER])
    result = Trainer(cfg, etl_dir, tmp_path / "demo", progress=False).fit()
    test = result.evaluation["test"]
    for task in ("click", "like", "finish"):
        model_auc, pop_auc = test["tasks"][task]["auc"], test["popularity"][task]["auc"]
        assert math.isfinite(model_auc) and model_auc > pop_auc, (task, model_auc, pop_auc)


def test_sigkill_mid_run_then_resume_matches(etl_dir: Path, tmp_path: Path) -> None:
    """A real `aptrank train` process is SIGKILLed as soon as its first checkpoint exists; `--resume`
    finishes the run with the metrics of an uninterrupted one."""
    import os
    import signal
    import subprocess
    import time

    args = [*TINY, "train.epochs=3", "train.max_steps_per_epoch=60", "seed=11"]
    cli = [
        *CLI,
        "train",
        "--features",
        str(etl_dir),
        "--no-progress",
        "--workdir",
        str(tmp_path / "mlflow"),
    ]
    sets = [x for a in args for x in ("--set", a)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [*cli, *sets, "--run-dir", str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not checkpoint.last_path(cut).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = checkpoint.load(checkpoint.last_path(cut))["epoch"]
    assert killed_at < 2
    subprocess.run(
        [*cli, *sets, "--run-dir", str(cut), "--resume"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    full = Trainer(load_config(None, args), etl_dir, tmp_path / "full", progress=False).fit()
    resumed = json.loads((cut / "evaluation.json").read_text())
    for task, metrics in full.evaluation["test"]["tasks"].items():
        assert resumed["test"]["tasks"][task]["auc"] == pytest.approx(metrics["auc"], abs=1e-12)
    # the resumed process reattached to the killed one's MLflow run and finished it
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow'}/mlflow.db")
    run = client.get_run((cut / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "11"
    click_auc = full.evaluation["test"]["tasks"]["click"]["auc"]
    assert run.data.metrics["final/test/click/auc"] == pytest.approx(click_auc)


def test_baselines_give_delta_m(etl_dir: Path, tmp_path: Path) -> None:
    from aptrank.pipeline.ranking_metrics import delta_m
    from aptrank.pipeline.training import run_training

    result = run_training(_cfg("train.epochs=1", "seed=4"), etl_dir, tmp_path / "b", baselines=True, progress=False)
    base = json.loads((tmp_path / "b" / "baselines.json").read_text())
    assert set(base) == {"click", "like", "finish"}
    assert result.evaluation["delta_m_auc"] == pytest.approx(delta_m(result.evaluation["test"]["tasks"], base))
    assert math.isfinite(result.evaluation["delta_m_auc"])


def test_skipped_non_finite_steps_are_counted_and_stop_the_run_after_n_in_a_row(etl_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg("train.epochs=3", "seed=1", "mtl.nonfinite=skip", "mtl.max_skipped_in_a_row=3")
    trainer = _poisoned_trainer(cfg, etl_dir, tmp_path / "skip", skipped_before=0)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step 0: 3 steps in a row skipped .*'like'"):
        trainer.fit()
    assert trainer.optimizer.skipped_steps == 3


def test_non_finite_weights_are_never_checkpointed(etl_dir: Path, tmp_path: Path) -> None:
    """NaN weights with every step skipped (so no loss check fires): the epoch's end refuses them,
    and the last checkpoint stays the finite one of the epoch before."""
    cfg = _cfg("train.epochs=3", "seed=1", "mtl.nonfinite=skip", "mtl.max_skipped_in_a_row=100000")
    trainer = _poisoned_trainer(cfg, etl_dir, tmp_path / "w")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: non-finite weights in \['towers\.1\.out\.weight'\]"):
        trainer.fit()
    _assert_last_checkpoint_is_finite_epoch_0(tmp_path / "w")
