"""The next state is written beside the day's stages into a staging folder and committed (FeatureSpec,
``state.json``, an atomic rename) after the day's outputs are published (``data/etl/state.py``
``DayState.commit``). A run SIGKILLed at the rename leaves a complete staging folder that no run reads
as a state, and rerunning the day gives the outputs and state of a run never killed. A damaged state
file (truncated, or a ``state.json`` that does not parse) is refused naming the file and how to
rebuild it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_etl_daily import BOOT, SCORING_PARTS, _generated_cfg

from aptrank.data.etl.daily import STATE_DIR, StateError, examples_digest, run_day, run_days
from aptrank.data.etl.state import STAGING_PREFIX, STATE_FILE, state_days
from aptrank.data.etl.summary import content_hash
from aptrank.data.synthetic import GeneratorConfig, generate

DAY = BOOT + dt.timedelta(days=2)
KILLED_RUN = """
import datetime as dt, os, pathlib, signal, sys
from aptrank.data.etl.config import config_from_dict
from aptrank.data.etl.daily import run_day
import yaml
rename = pathlib.Path.rename
def killed_at_commit(self, target):
    if self.name.startswith(".staging-"):
        os.kill(os.getpid(), signal.SIGKILL)
    return rename(self, target)
pathlib.Path.rename = killed_at_commit
cfg = config_from_dict(yaml.safe_load(pathlib.Path(sys.argv[1]).read_text()), "test")
run_day("canonical", sys.argv[2], sys.argv[3], cfg, dt.date.fromisoformat(sys.argv[4]), print)
"""


def _quiet(_msg: str) -> None:
    pass


def _state_bytes(root: Path, day: dt.date) -> str:
    return content_hash(root / STATE_DIR, (day.isoformat(),))


def test_a_run_killed_at_the_state_commit_leaves_no_state_and_reruns_clean(tmp_path: Path) -> None:
    log = tmp_path / "log"
    generate(log, GeneratorConfig(events=6_000, users=120, items=80, seed=5, days=6), progress=False)
    cfg = _generated_cfg()
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_days("canonical", log, clean, cfg, BOOT, DAY - dt.timedelta(days=1), bootstrap_first=True)
    shutil.copytree(clean, killed)
    run_day("canonical", log, clean, cfg, DAY, _quiet)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path / "cfg.yaml"), str(log), str(killed), DAY.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    staged = killed / STATE_DIR / f"{STAGING_PREFIX}{DAY.isoformat()}"
    assert (staged / STATE_FILE).is_file()  # complete but never renamed into place
    assert DAY not in state_days(killed / STATE_DIR)

    run_day("canonical", log, killed, cfg, DAY, _quiet)
    assert not staged.exists()
    assert examples_digest(killed) == examples_digest(clean)
    assert content_hash(killed, SCORING_PARTS) == content_hash(clean, SCORING_PARTS)
    assert _state_bytes(killed, DAY) == _state_bytes(clean, DAY)


def test_a_damaged_state_is_refused_with_the_file_and_the_rebuild(tmp_path: Path) -> None:
    log = tmp_path / "log"
    generate(log, GeneratorConfig(events=4_000, users=100, items=60, seed=6, days=5), progress=False)
    cfg, out = _generated_cfg(), tmp_path / "out"
    run_days("canonical", log, out, cfg, BOOT, DAY - dt.timedelta(days=1), bootstrap_first=True)
    folder = out / STATE_DIR / (DAY - dt.timedelta(days=1)).isoformat()
    retained = folder / "retained_user.arrow"
    intact = retained.read_bytes()
    retained.write_bytes(intact[: len(intact) // 2])  # truncated: a disk filled or a copy cut short
    with pytest.raises(StateError, match=r"retained_user\.arrow: the daily state is unreadable .*--date 2022-04-11"):
        run_day("canonical", log, out, cfg, DAY, _quiet)
    retained.write_bytes(intact)
    (folder / STATE_FILE).write_text('{"version": ')
    with pytest.raises(StateError, match=r"state\.json: the daily state is unreadable \(JSONDecodeError"):
        run_day("canonical", log, out, cfg, DAY, _quiet)
