"""The job lock with real second processes: refused while held, free after a clean release or a
crash (the crashed holder is reported as stale), one winner among simultaneous starters."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptrank.pipeline.lock import JobLock, LockHeldError

HOLD = """
import os, sys, time
from aptrank.pipeline.lock import JobLock
lock = JobLock(sys.argv[1], sys.argv[2]).acquire()
if sys.argv[3] == "fork":  # leave the lock to a child, as a trainer's worker processes would
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)
print("held", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
lock.release()
"""
RACE = """
import sys
from aptrank.pipeline.lock import JobLock, LockHeldError
try:
    JobLock(sys.argv[1], sys.argv[2]).acquire()
except LockHeldError:
    print("refused", flush=True)
    sys.exit(0)
print("won", flush=True)
sys.stdin.read()  # hold until every racer has answered
"""
TIMEOUT = 60.0


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line, waiting at most TIMEOUT seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready, "child process did not answer in time"
    return proc.stdout.readline().strip()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test starts; all are stopped at the end, whatever happens."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=TIMEOUT)
        p.stdin.close()
        p.stdout.close()


def test_second_process_is_refused_while_the_first_holds(tmp_path: Path, children: list) -> None:
    holder = spawn(HOLD, str(tmp_path), "daily", "stdin")
    children.append(holder)
    assert read_line(holder) == "held"
    with pytest.raises(LockHeldError) as refused:
        JobLock(tmp_path, "daily").acquire()
    message = str(refused.value)
    assert "locks/daily.lock: job 'daily' is already running" in message
    assert f"pid {holder.pid} on " in message and "(running)" in message and "-c" in message
    JobLock(tmp_path, "weekly").acquire().release()  # another config is not blocked
    holder.stdin.close()
    assert holder.wait(timeout=TIMEOUT) == 0
    assert not (tmp_path / "locks" / "daily.lock").exists()  # a clean release removes the file
    with JobLock(tmp_path, "daily") as lock:
        assert lock.stale is None
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.path.exists()


def test_crashed_holder_is_taken_over_and_reported_stale(tmp_path: Path, children: list) -> None:
    holder = spawn(HOLD, str(tmp_path), "daily", "stdin")
    children.append(holder)
    assert read_line(holder) == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT)
    assert json.loads((tmp_path / "locks" / "daily.lock").read_text())["pid"] == holder.pid  # left behind
    with JobLock(tmp_path, "daily") as lock:
        assert lock.stale is not None and lock.stale.pid == holder.pid
        assert lock.stale.alive() is False


def test_lock_inherited_by_a_child_names_the_dead_parent(tmp_path: Path, children: list) -> None:
    parent = spawn(HOLD, str(tmp_path), "daily", "fork")
    children.append(parent)
    grandchild = int(read_line(parent))
    parent.wait(timeout=TIMEOUT)
    try:
        with pytest.raises(LockHeldError, match=rf"pid {parent.pid} .*no longer running.*child process"):
            JobLock(tmp_path, "daily").acquire()
    finally:
        os.kill(grandchild, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT  # SIGKILL is asynchronous: the lock goes when the process is gone
    while True:
        try:
            JobLock(tmp_path, "daily").acquire().release()
            break
        except LockHeldError:
            assert time.monotonic() < deadline, "lock still held after its last holder was killed"
            time.sleep(0.05)


def test_one_winner_among_simultaneous_starts(tmp_path: Path, children: list) -> None:
    racers = [spawn(RACE, str(tmp_path), "daily") for _ in range(4)]
    children.extend(racers)
    answers = sorted(read_line(p) for p in racers)  # the winner holds until its stdin closes
    assert answers == ["refused", "refused", "refused", "won"]
    for p in racers:
        p.stdin.close()
        assert p.wait(timeout=TIMEOUT) == 0


def test_same_process_twice_and_bad_names(tmp_path: Path) -> None:
    with JobLock(tmp_path, "job-1.v2"), pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
        JobLock(tmp_path, "job-1.v2").acquire()
    lock = JobLock(tmp_path, "job").acquire()
    with pytest.raises(RuntimeError, match="already held by this process"):
        lock.acquire()
    lock.release()
    lock.release()  # releasing twice is harmless
    for bad in ("../escape", "", "a b", "-x"):
        with pytest.raises(ValueError, match="must match"):
            JobLock(tmp_path, bad)
