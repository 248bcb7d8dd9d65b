"""Task dependencies (ESMM) end to end on the real KuaiRand sample: a short MGDA training under
``tasks`` has finite losses, passes ``aptrank export``'s parity gate, and its scored output has
p(child) <= p(parent) on every row; an unknown task in ``tasks`` exits 2 with one line naming the key;
without ``tasks`` the config, its hash and its params are what they were."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from aptrank.pipeline.cli import app
from aptrank.pipeline.config import load_config
from aptrank.pipeline.provenance import config_hash
from aptrank.pipeline.scoring import load_scorer
from aptrank.pipeline.trainer import Trainer
from tests.tiny import CLI, TINY_MMOE

ESMM = ["tasks.finish.given=click", "tasks.like.given=click", "tasks.like.conditional_loss=true"]
SHORT = [*TINY_MMOE, "train.max_steps_per_epoch=6", "train.eval_batch_size=65536", "mtl.method=mgda"]


def test_mgda_under_task_dependencies_scores_children_below_parents(
    etl_dir: Path, kuairand_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = Trainer(load_config(None, [*SHORT, *ESMM]), etl_dir, run_dir, progress=False).fit()
    losses = result.history[0]["train_loss"]
    assert set(losses) == {"click", "like", "finish"} and all(math.isfinite(v) and v > 0 for v in losses.values())
    assert all(math.isfinite(m["auc"]) for m in result.evaluation["test"]["tasks"].values())

    out = tmp_path / "model.onnx"
    exported = CliRunner().invoke(
        app, ["export", "--run-id", str(run_dir), "--out", str(out), "--features", str(etl_dir)]
    )
    assert exported.exit_code == 0, exported.output  # the parity gate (1e-5) passed

    from aptrank.data.adapters import load_source

    candidates = load_source("kuairand", kuairand_dir).events.select("user_id", "item_id", "ts", "tab").tail(2000)
    with load_scorer(out, features=etl_dir) as scorer:
        scored = scorer.score(candidates.collect())
    assert scored.height > 1000
    assert scored.filter(pl.col("p_finish") > pl.col("p_click")).height == 0
    assert scored.filter(pl.col("p_like") > pl.col("p_click")).height == 0
    assert scored.filter(pl.col("p_finish") < pl.col("p_click") * 0.999).height > 0  # not all equal


def test_unknown_task_exits_2_with_one_line(etl_dir: Path, tmp_path: Path) -> None:
    sets = [x for s in [*TINY_MMOE, "train.max_steps_per_epoch=1", "tasks.finish.given=share"] for x in ("--set", s)]
    cmd = [*CLI, "train", "--features", str(etl_dir), "--run-dir", str(tmp_path / "run"), "--no-track", *sets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: <defaults>: tasks.finish.given: 'share' is not a task of the FeatureSpec ['click', 'like', 'finish']"
    ]
    assert "Traceback" not in done.stderr


def test_no_tasks_key_leaves_the_config_as_it_was() -> None:
    plain = load_config(None, TINY_MMOE)
    assert plain.tasks == {} and "tasks" not in plain.to_dict()
    assert not any(k.startswith("tasks") for k in plain.flat())
    sections = ["name", "seed", "data", "model", "train", "mtl", "tracking", "gate", "scoring"]
    assert list(plain.to_dict()) == sections  # the keys config_hash hashed before `tasks` existed
    esmm = load_config(None, [*TINY_MMOE, *ESMM])
    assert esmm.flat()["tasks.finish.given"] == "click" and esmm.flat()["tasks.like.conditional_loss"] == "True"
    assert config_hash(esmm) != config_hash(plain)
