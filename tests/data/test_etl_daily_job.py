"""``aptrank run --date``: the scheduled job with the incremental daily ETL, as a real process. The
first date bootstraps and trains; a later date with a day missing before it is refused (exit 2, the
backfill command in the error); the next day, which has no events in the sample, adds no examples,
so the job finds the existing version and registers nothing new."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.tiny import CLI, TINY_DEMO

ROOT = Path(__file__).resolve().parents[2]


def _run(workdir: Path, date: str) -> tuple[int, dict]:
    overrides = [*TINY_DEMO, "train.max_steps_per_epoch=4", "gate.floor_margin=-1"]  # a 4-step model: no floor
    cmd = [*CLI, "run", "--config", str(ROOT / "configs" / "demo.yaml"), "--workdir", str(workdir), "--date", date]
    cmd += [x for o in overrides for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    return done.returncode, json.loads(lines[-1])


@pytest.mark.slow
def test_run_date_bootstraps_refuses_a_gap_and_adds_days(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "2022-04-30")
    assert code == 0 and out["created"] is True, out
    assert (tmp_path / "daily" / "state" / "2022-04-30" / "state.json").is_file()
    code, out = _run(tmp_path, "2022-05-02")
    assert code == 2 and "no state for 2022-05-01" in out["error"]
    assert "aptrank etl --date 2022-05-01 --until 2022-05-02" in out["error"]
    code, out = _run(tmp_path, "2022-05-01")
    assert code == 0 and out["created"] is False, out
    assert json.loads((tmp_path / "daily" / "days" / "2022-05-01" / "summary.json").read_text())["input_rows"] == 0
    code, out = _run(tmp_path, "2022-13-01")
    assert code == 2 and "not a date" in out["error"]
