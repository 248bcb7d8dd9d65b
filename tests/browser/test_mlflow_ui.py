"""The MLflow UI's run page of a job run, rendered by headless Chromium (Debian's ``chromium``), shows the
run's datasets (names and digests) and its source tags, and its charts tab starts with the per-epoch
curves; screenshots are kept for a person to look at.

Not part of the default test run (it needs a browser): marked ``browser``, which ``pyproject.toml``
deselects. Run it with::

    apt-get install chromium            # Debian's package
    python -m pytest -m browser tests/browser -p no:cacheprovider
    APTRANK_SCREENSHOT_DIR=shots python -m pytest -m browser tests/browser   # keep the PNGs
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.tiny import CHEAP_TEACHER, CLI

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
JOB = [
    "model.embedding_dim=8",
    "model.expert_hidden=[32]",
    "model.tower_hidden=[8]",
    "model.ple_shared_experts=1",
    "train.epochs=1",
    "train.batch_size=1024",
    "train.threads=2",
    "train.max_steps_per_epoch=4",
    *CHEAP_TEACHER,
]
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
RENDER_MS = 30_000  # virtual time for the single-page app to fetch and render


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("ui-job")
    cmd = [*CLI, "run", "--config", str(ROOT / "configs" / "demo.yaml"), "--workdir", str(work)]
    cmd += [x for o in JOB for x in ("--set", o)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(cmd, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ui(job_run: dict):
    """``mlflow server`` on the job's store, on a loopback port; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", job_run["tracking_uri"]]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("mlflow server did not come up") from None
                time.sleep(1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is not installed (apt-get install chromium)"
    cmd = [browser, *CHROMIUM_FLAGS, "--window-size=1600,1800", f"--virtual-time-budget={RENDER_MS}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_run_page_shows_datasets_and_source_tags(job_run: dict, ui: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run = MlflowClient(job_run["tracking_uri"]).get_run(job_run["run_id"])
    page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    shots = Path(os.environ.get("APTRANK_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / "mlflow_run_page.png"
    done = _chromium(f"--screenshot={png}", page)
    assert png.is_file() and png.stat().st_size > 50_000, done.stderr[-2000:]
    print(f"screenshot: {png}")

    dom = _chromium("--dump-dom", page).stdout
    train = next(d.dataset for d in run.inputs.dataset_inputs if d.dataset.name.endswith("-train"))
    assert f"{train.name} ({train.digest})" in dom  # the Datasets block: name (digest)
    assert run.data.tags["mlflow.source.name"][:40] in dom  # Source
    assert run.data.tags["mlflow.source.git.commit"][:7] in dom
    assert run.data.tags["mlflow.user"] in dom  # Created by
    assert "served (test, snapshot as of" in dom  # the description

    charts_page = page.replace("?", "/model-metrics?")
    _chromium(f"--screenshot={shots / 'mlflow_run_charts.png'}", charts_page)
    charts = _chromium("--dump-dom", charts_page).stdout
    sections = [charts.find(name) for name in ("Epoch/train_loss", "diag", "final", "served")]
    assert -1 not in (sections[0], sections[2], sections[3]) and sections[0] < min(i for i in sections[1:] if i >= 0)
