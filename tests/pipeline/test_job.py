"""`aptrank run`, the scheduled job, end to end as a real process: first model becomes champion,
a rerun on the same inputs makes no new version, a worse challenger is refused (exit 3, champion
unchanged), a better one is promoted, a concurrent run is refused by the lock, bad config exits 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]
BASE = [
    "model.embedding_dim=8",
    "model.expert_hidden=[32]",
    "model.tower_hidden=[8]",
    "model.num_experts=2",
    "train.epochs=1",
    "train.batch_size=1024",
    "train.threads=2",
    "gate.auc_tolerance=0.002",
    "gate.floor_margin=-1",  # these few-step models compare with each other; floors: test_promotion.py
]
WEAK = [*BASE, "train.max_steps_per_epoch=4"]
WORSE = [*BASE, "train.max_steps_per_epoch=1", "mtl.lr=0.00001", "mtl.embedding_lr=0.00001"]
STRONG = [*BASE, "train.max_steps_per_epoch=30"]


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
    assert out["gate"]["decision"] == "promoted" and out["created"] is True
    assert out["model_uri"] == "models:/kuairand-demo/1" and out["champion_uri"] == "models:/kuairand-demo@champion"
    assert set(out["metrics"]["test_auc"]) == {"click", "like", "finish"}
    assert champion(workdir) == "1"
    assert (workdir / "features" / "summary.json").is_file()


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
