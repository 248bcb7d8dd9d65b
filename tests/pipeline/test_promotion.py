"""Issue #20: the scheduled job never lies about the registry.

The crash test SIGKILLs ``aptrank run`` (a real child process, real SQLite MLflow store) right after
each promotion step and reruns it: every rerun finishes what the kill left undone, and the end state
is exactly one gated version holding ``champion``. Floors refuse a constant model as the first
version (exit 3, kept as a refused challenger), and a rerun of it exits 3 again. An infinite learning
rate is refused when the config loads (one JSON line, exit 2; a diverging training, exit 1:
test_diverging_run.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aptrank.pipeline.gate import below_floor, decide
from tests.tiny import CLI, TINY_DEMO

ROOT = Path(__file__).resolve().parents[2]
NAME = "kuairand-demo"
FAST = [*TINY_DEMO, "train.max_steps_per_epoch=3", "scoring.fold_rows=0"]


def run_job(workdir: Path, features: Path, overrides: list[str], kill_after: str | None = None) -> tuple[int, dict]:
    """``aptrank run`` in a child process (through the crash helper when ``kill_after`` is set);
    (exit code or -signal, last JSON line or {})."""
    args = ["run", "--config", str(ROOT / "configs" / "demo.yaml"), "--workdir", str(workdir)]
    args += [x for o in [*overrides, f"data.features={features}"] for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if kill_after is None:
        cmd = [*CLI, *args]
    else:
        cmd = [sys.executable, "-m", "tests.pipeline.crash_job", *args[1:]]
        env["APTRANK_TEST_KILL_AFTER"] = kill_after
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if kill_after is None:
        assert out, done.stderr[-3000:]
    return done.returncode, out


def registry(workdir: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(version -> tags, alias -> version) of the job's registered model."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    versions = {str(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{NAME}'")}
    if not versions:
        return {}, {}
    return versions, {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}


def steps(tags: dict[str, str]) -> set[str]:
    return {k.removeprefix("aptrank.step.") for k, v in tags.items() if k.startswith("aptrank.step.") and v == "done"}


def test_sigkill_after_each_step_then_rerun_ends_with_one_gated_champion(tmp_path: Path, etl_dir: Path) -> None:
    overrides = [*FAST, "gate.floor_margin=-1"]  # this test is about crashes, not floors
    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="logged")
    assert code == -signal.SIGKILL
    assert registry(tmp_path) == ({}, {})  # a kill before the version exists leaves none

    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="created")
    assert code == -signal.SIGKILL
    versions, aliases = registry(tmp_path)
    assert list(versions) == ["1"] and steps(versions["1"]) == {"logged", "created"} and aliases == {}

    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="challenger")  # resumes: no training
    assert code == -signal.SIGKILL
    versions, aliases = registry(tmp_path)
    assert steps(versions["1"]) == {"logged", "created", "challenger"} and aliases == {"challenger": "1"}
    assert "aptrank.gate.decision" not in versions["1"]

    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="gated")
    assert code == -signal.SIGKILL
    versions, aliases = registry(tmp_path)
    assert versions["1"]["aptrank.gate.decision"] == "promoted" and "champion" not in aliases

    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="champion")
    assert code == -signal.SIGKILL
    versions, aliases = registry(tmp_path)
    assert aliases == {"challenger": "1", "champion": "1"}

    code, out = run_job(tmp_path, etl_dir, overrides)
    assert code == 0, out
    assert out["created"] is False and out["resumed_steps"] == [] and out["gate"]["decision"] == "promoted"
    versions, aliases = registry(tmp_path)
    assert list(versions) == ["1"] and aliases == {"challenger": "1", "champion": "1"}
    assert steps(versions["1"]) == {"logged", "created", "challenger", "gated", "champion"}
    from mlflow import MlflowClient

    runs = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()]
    )
    # the two trainings were killed; each was closed as FAILED by the next start (none stays RUNNING)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]


def test_rerun_after_a_kill_before_the_champion_alias_promotes(tmp_path: Path, etl_dir: Path) -> None:
    overrides = [*FAST, "gate.floor_margin=-1"]
    code, _ = run_job(tmp_path, etl_dir, overrides, kill_after="created")
    assert code == -signal.SIGKILL
    code, out = run_job(tmp_path, etl_dir, overrides)
    assert code == 0, out
    assert out["resumed_steps"] == ["challenger", "gated", "champion"]
    versions, aliases = registry(tmp_path)
    assert list(versions) == ["1"] and aliases == {"challenger": "1", "champion": "1"}


def test_constant_model_is_refused_by_the_floor_even_as_first_version(tmp_path: Path, etl_dir: Path) -> None:
    code, out = run_job(tmp_path, etl_dir, [*FAST, "mtl.method=ew", "mtl.lr=1000"])
    assert code == 3, out
    assert out["gate"]["decision"] == "refused" and "below the floor" in out["gate"]["reason"]
    popularity = out["metrics"]["popularity_test_auc"]
    assert out["gate"]["floors"] == pytest.approx({t: a + 0.01 for t, a in popularity.items()})
    versions, aliases = registry(tmp_path)
    assert list(versions) == ["1"] and aliases == {"challenger": "1"}  # kept as a refused challenger
    assert versions["1"]["aptrank.gate.decision"] == "refused"
    code, again = run_job(tmp_path, etl_dir, [*FAST, "mtl.method=ew", "mtl.lr=1000"])
    assert code == 3 and again["created"] is False and again["gate"]["decision"] == "refused"


def test_an_infinite_lr_is_one_json_line_and_exit_2_and_registers_nothing(tmp_path: Path, etl_dir: Path) -> None:
    code, out = run_job(tmp_path, etl_dir, [*FAST, "mtl.lr=.inf"])
    assert code == 2, out
    assert out["exit_code"] == 2 and out["error"].endswith("mtl.lr: must be > 0 and finite, got inf")
    assert registry(tmp_path) == ({}, {})


def test_day_two_challenger_is_gated_against_the_champion_rescored_on_its_window(
    tmp_path: Path, etl_dir: Path, kuairand_dir: Path
) -> None:
    """Day 1 tests on Apr 29 (data up to Apr 30 excluded); day 2 is the shipped config (test Apr 30).
    Day 2's challenger is compared with version 1 scored as served on Apr 30, not with its Apr 29 AUCs."""
    import yaml

    from aptrank.data.etl.config import config_from_dict
    from aptrank.data.etl.run import run_etl
    from aptrank.pipeline.version_eval import evaluate_version

    raw = yaml.safe_load((ROOT / "configs" / "etl" / "kuairand.yaml").read_text())
    raw["time_range"]["end"] = "2022-04-30"
    raw["splits"] = {"valid_start": "2022-04-28", "test_start": "2022-04-29"}
    raw.setdefault("validation", {})["max_reject_rate"] = 1.0  # Apr 30 is out of day 1's time range
    day1, day1_config = tmp_path / "day1", tmp_path / "etl-day1.yaml"
    day1_config.write_text(yaml.safe_dump(raw))  # the job's evaluation as served reruns this ETL config
    run_etl("kuairand", kuairand_dir, day1, config_from_dict(raw))
    work, overrides = tmp_path / "work", [*FAST, "gate.floor_margin=-1"]
    code, first = run_job(work, day1, [*overrides, f"data.etl_config={day1_config}"])
    assert code == 0 and first["gate"]["decision"] == "promoted", first

    code, second = run_job(work, etl_dir, overrides)
    assert code in (0, 3), second  # gated either way: never "cannot compare windows" (exit 1)
    assert second["gate"]["champion_version"] == "1" and second["gate"]["champion_rescored"] is True
    versions, aliases = registry(work)
    tags = versions["2"]
    rescored = {t: float(tags[f"aptrank.gate.champion_auc.{t}"]) for t in ("click", "like", "finish")}
    recorded = {t: float(versions["1"][f"aptrank.auc.{t}"]) for t in ("click", "like", "finish")}
    served = evaluate_version(f"models:/{NAME}/1", f"sqlite:///{work}/mlflow.db", etl_dir, "test")
    assert rescored == pytest.approx(served, abs=1e-12) and rescored != pytest.approx(recorded, abs=1e-6)
    assert aliases["champion"] == ("2" if code == 0 else "1") and aliases["challenger"] == "2"

    retry, again = run_job(work, etl_dir, overrides)
    assert retry == code and again["created"] is False and again["resumed_steps"] == []


def test_floor_refuses_below_and_missing_and_nan() -> None:
    floors = {"click": 0.67, "like": 0.63}
    assert below_floor({"click": 0.70, "like": 0.64}, floors) is None
    assert "like 0.5000 < 0.6300" in below_floor({"click": 0.70, "like": 0.5}, floors)
    assert "click nan" in below_floor({"click": math.nan, "like": 0.7}, floors)
    assert "click nan" in below_floor({"like": 0.7}, floors)
    promoted, reason = decide({"click": 0.5, "like": 0.5}, None, 0.002, floors)
    assert not promoted and "below the floor" in reason
    assert decide({"click": 0.7, "like": 0.7}, None, 0.002, floors)[0]
