"""Distributed training: a real 2-process `torchrun` (gloo, TorchRec DistributedModelParallel with
table-wise sharding, apt all-reducing the per-task gradients) ends with the test AUCs of the
1-process run, for EW on soft labels from the LightGBM teacher (``train.distill``, the demo's default:
every rank makes the same soft split in its own folder) and for a gradient-manipulation method
(PCGrad) on hard labels."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from aptrank.pipeline.config import load_config
from aptrank.pipeline.trainer import Trainer
from tests.tiny import CHEAP_TEACHER, CLI

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "model.embedding_dim=8",
    "model.expert_hidden=[32]",
    "model.tower_hidden=[8]",
    "model.num_experts=2",
    "train.epochs=2",
    "train.batch_size=1024",
    "train.threads=1",
    "mtl.embedding_optimizer=rowwise_adagrad",
    "mtl.lr=0.003",
    "mtl.embedding_lr=0.05",
    "seed=2",
]


DISTILL = [*CHEAP_TEACHER, "train.distill.weight=0.8"]


@pytest.mark.parametrize(("method", "extra"), [("ew", DISTILL), ("pcgrad", [])], ids=["ew-distill", "pcgrad"])
def test_two_process_run_matches_one_process(etl_dir: Path, tmp_path: Path, method: str, extra: list[str]) -> None:
    args = [*ARGS, f"mtl.method={method}", *extra]
    single = Trainer(load_config(None, args), etl_dir, tmp_path / "one", progress=False).fit()
    cmd = [
        *CLI,
        "train",
        "--features",
        str(etl_dir),
        "--run-dir",
        str(tmp_path / "two"),
        "--nproc",
        "2",
        "--no-progress",
        "--workdir",
        str(tmp_path / "mlflow"),
        *[x for a in args for x in ("--set", a)],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    assert two["world_size"] == 2
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0 alone prints the summary line
    assert summary["run_dir"] == str(tmp_path / "two")
    for task, metrics in single.evaluation["test"]["tasks"].items():
        assert abs(two["test"]["tasks"][task]["auc"] - metrics["auc"]) < 0.01, task
    if extra:  # each rank made the soft split itself, the same as the 1-process run's
        made = [tmp_path / run / "distill" / f"rank-{r}" / "train" for run, r in (("one", 0), ("two", 0), ("two", 1))]
        contents = [[f.read_bytes() for f in sorted(d.glob("*.parquet"))] for d in made]
        assert contents[0] and contents[0] == contents[1] == contents[2]
        assert two["distill"] == single.evaluation["distill"]
    from mlflow import MlflowClient  # only rank 0 logged: exactly one run

    runs = MlflowClient(f"sqlite:///{tmp_path / 'mlflow'}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow'}/mlflow.db").search_experiments()]
    )
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
