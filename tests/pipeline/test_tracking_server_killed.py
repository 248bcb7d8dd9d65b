"""Issue #20: a tracking server killed in the middle of a run costs a clear error within
``tracking.timeout_s`` (not 8 minutes of retries), and the run it left RUNNING is closed as FAILED
by the next start of the scheduled job. A real ``mlflow server`` on 127.0.0.1, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aptrank.pipeline.config import load_config
from aptrank.pipeline.mlflow_store import TrackingError
from aptrank.pipeline.stale_runs import TAG_SCHEDULED, fail_stale_runs
from aptrank.pipeline.tracking import TrackedRun

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 8.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` in its own process group (it forks workers), once /health answers."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", str(store / "artifacts")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError("mlflow server did not start within 120 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "server"


def test_killed_server_is_a_clear_error_within_the_bound_and_the_run_ends_failed(
    store: Path, tmp_path: Path, etl_dir: Path
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"tracking.uri={uri}", f"tracking.timeout_s={TIMEOUT_S}"])
    server = start_server(store, port)
    try:
        tracked = TrackedRun(cfg, tmp_path / "work", features_dir=etl_dir, tags={TAG_SCHEDULED: str(tmp_path)})
        with pytest.raises(TrackingError) as caught, tracked:
            stop(server)  # SIGKILL, mid-run
            t0 = time.monotonic()
            try:
                tracked.log_epoch(0, {"train_loss": {"click": 0.5}})
                tracked.flush()
            finally:
                elapsed = time.monotonic() - t0
        assert elapsed < TIMEOUT_S + 5, f"gave up after {elapsed:.1f} s"
        message = str(caught.value)
        assert message.startswith(f"MLflow {uri}: ") and "\n" not in message.split(";")[0]
        server = start_server(store, port)  # the server comes back; the run is still RUNNING there
        client = tracked.client
        assert client.get_run(tracked.run_id).info.status == "RUNNING"
        assert fail_stale_runs(client, cfg.tracking.experiment, cfg.name, "/elsewhere") == []  # another lock's
        assert fail_stale_runs(client, cfg.tracking.experiment, cfg.name, str(tmp_path)) == [tracked.run_id]
        assert client.get_run(tracked.run_id).info.status == "FAILED"
    finally:
        stop(server)
