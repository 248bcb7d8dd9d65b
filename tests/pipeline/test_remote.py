"""Against a real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied local artifacts): track a
run, register and gate two versions, read the champion back through a fresh client; then with the
server stopped: a clear error at once and no half-registered version in its database."""

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
from typing import Any

import mlflow.pyfunc
import numpy as np
import onnxruntime as ort
import pytest
from mlflow import MlflowClient
from test_tracking_support import TASKS, job_config, split_metrics, tiny_onnx, train_result, write_features

from aptrank.pipeline.gate import run_gate
from aptrank.pipeline.mlflow_store import ENV_URI, TrackingError, connect
from aptrank.pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    create_version,
    download_model,
    eval_tags,
    find_version,
    log_model_file,
    register_version,
)
from aptrank.pipeline.tracking import TrackedRun

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


class MlflowServer:
    """``mlflow server`` in its own process group, started and stopped by the test."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = root / "server.db"
        self.artifacts = root / "server-artifacts"
        self.log = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != ENV_URI}
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {READY_TIMEOUT_S}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, crash: bool = False) -> None:
        """SIGTERM (SIGKILL when ``crash``) to the server's process group; SIGKILL after a timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if crash else signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, server: MlflowServer) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("remote-job")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_URI, server.uri)  # the usual way to point a job at a server
        yield {
            "root": root,
            "spec": write_features(root / "features"),
            "work": root / "work",
            "onnx_a": tiny_onnx(root / "a.onnx", 0.1),
            "onnx_b": tiny_onnx(root / "b.onnx", -0.3),
        }


def test_track_register_gate_and_read_champion_back(server: MlflowServer, job: dict[str, Any], tmp_path: Path) -> None:
    name = "remote-ranker"
    cfg = job_config(name)
    registered = []
    for k, aucs in enumerate([[0.70, 0.60, 0.65], [0.71, 0.61, 0.66]]):
        result = train_result(job["root"] / f"run{k}", dict(zip(TASKS, aucs, strict=True)), job["spec"], epochs=2)
        model = job["onnx_b"] if k else result.run_dir / "best_model.pt"  # both kinds of model file
        with TrackedRun(cfg, job["work"], features_dir=job["root"] / "features") as run:
            assert run.uri == server.uri
            run.log_result(result)
            reg = register_version(
                run.client, name, run.run_id, model, key=f"inputs-{k}", evaluation=result.evaluation, window="w"
            )
        decision = run_gate(run.client, name, reg.version.version, tolerance=0.002)
        assert decision.promoted
        registered.append((run.run_id, str(reg.version.version)))
    assert not (job["work"] / "mlflow.db").exists()  # nothing went to the embedded store

    fresh = MlflowClient(server.uri)
    champion = fresh.get_model_version_by_alias(name, CHAMPION)
    assert str(champion.version) == registered[1][1] and champion.run_id == registered[1][0]
    assert champion.tags["aptrank.gate.decision"] == "promoted"
    assert champion.tags["aptrank.gate.champion_auc.click"] == "0.7"
    assert str(fresh.get_model_version_by_alias(name, CHALLENGER).version) == registered[1][1]
    run = fresh.get_run(registered[1][0])
    assert run.data.params["feature_spec.hash"] == job["spec"].hash
    assert run.data.metrics["final/test/click/auc"] == 0.71
    plots = {a.path for a in fresh.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curves.png"}
    assert any(server.artifacts.rglob("best_model.pt"))  # artifacts went through the server's proxy

    model = mlflow.pyfunc.load_model(str(download_model(fresh, name, CHAMPION, tmp_path)))
    batch = {"categorical": np.zeros((3, 2), np.int64), "dense": np.array([[1, 2], [0, -1], [3, 0]], np.float32)}
    want = ort.InferenceSession(str(job["onnx_b"]), providers=["CPUExecutionProvider"]).run(None, batch)[0]
    np.testing.assert_array_equal(model.predict(batch)["probabilities"], want)


def test_server_down_clear_error_and_nothing_half_registered(server: MlflowServer, job: dict[str, Any]) -> None:
    name = "down-ranker"
    evaluation = {"test": split_metrics(dict(zip(TASKS, [0.7, 0.6, 0.65], strict=True)))}
    with TrackedRun(job_config(name), job["work"]) as run:
        source, model_id = log_model_file(run.client, run.run_id, job["onnx_a"])  # artifacts are in
    server.stop(crash=True)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=rf"MLflow server {server.uri} is not reachable"):
        create_version(
            run.client, name, run.run_id, source, key="k", tags=eval_tags(evaluation, "test", "w"), model_id=model_id
        )
    with pytest.raises(TrackingError, match="is not reachable"):
        register_version(run.client, name, run.run_id, job["onnx_a"], key="k", evaluation=evaluation, window="w")
    with pytest.raises(TrackingError, match="is not reachable.*MLFLOW_TRACKING_URI"):
        TrackedRun(job_config(name), job["work"])
    with pytest.raises(TrackingError, match="is not reachable"):
        connect(server.uri)
    assert time.monotonic() - started < 30  # no minutes of retries against a dead server
    # the server's own database: the run and its model are there, no registered model or version
    store = MlflowClient(f"sqlite:///{server.db}")
    assert store.get_run(run.run_id).info.status == "FINISHED"
    assert store.search_registered_models(f"name = '{name}'") == []
    assert store.search_model_versions(f"run_id = '{run.run_id}'") == []
    assert find_version(store, name, "k") is None
