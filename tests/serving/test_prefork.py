"""The pre-fork mode (``aptrank serve --workers 2``): real worker processes on one loopback socket.

Success with the same numbers as in-process scoring on every worker, 422 naming the field, 413,
unknown user and items, /metrics summed over workers, a killed worker restarted, a registry-alias
model swap under load with zero failed requests, and clean shutdown (no worker left behind) for
both :class:`~serving.prefork.PreforkServer` and the CLI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pytest
from serving_http import (
    VALIDATION_CASES,
    WEIGHTS,
    Client,
    assert_scores,
    assert_swapped_without_failure,
    body_of,
    rank_through_swap,
    rows_of,
)

from aptrank.serving.prefork import PreforkServer
from aptrank.serving.scorer import Scorer, load_scorer
from aptrank.serving.server import PREFORK_STACKS
from aptrank.serving.worker import WorkerConfig
from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
LIMITS = {"max_candidates": 300, "max_body_bytes": 20_000}
METRICS_INTERVAL = 0.2


def _config(model: str, features: Path | None, **kw: Any) -> WorkerConfig:
    return WorkerConfig(
        model, str(features) if features else None, weights=WEIGHTS, metrics_interval=METRICS_INTERVAL, **kw
    )


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


@pytest.fixture(scope="module", params=PREFORK_STACKS)
def server(model_path: Path, etl_dir: Path, request: pytest.FixtureRequest) -> Iterator[PreforkServer]:
    config = _config(str(model_path), etl_dir, poll_seconds=0, stack=request.param, **LIMITS)
    srv = PreforkServer(config, WORKERS, port=0).start()
    pids = srv.pids
    assert len(pids) == WORKERS
    yield srv
    srv.stop()
    assert _gone(pids), "a worker outlived stop()"


def _metric(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_every_worker_ranks_with_the_in_process_numbers(
    server: PreforkServer, scorer: Scorer, candidates: pl.DataFrame
) -> None:
    rows = rows_of(candidates, 50)
    direct = scorer.score(rows)
    order = np.argsort(-direct.score, kind="stable")
    clients = [Client(server.port) for _ in range(2 * WORKERS)]  # open together: spread over the workers
    for c in clients:
        status, payload = c.rank(body_of(rows))
        assert status == 200 and payload["model_version"] == scorer.version
        assert [r["item_id"] for r in payload["results"]] == rows["item_id"].to_numpy()[order].tolist()
        assert [r["score"] for r in payload["results"]] == direct.score[order].tolist()
    serving = [p for p in server.pids if any(c.status == "ESTABLISHED" for c in psutil.Process(p).net_connections())]
    assert len(serving) == WORKERS, "connections did not reach every worker"
    for c in clients:
        c.close()


@pytest.mark.parametrize(("body", "loc"), VALIDATION_CASES[:4])
def test_validation_errors_are_422_naming_the_field(server: PreforkServer, body: dict, loc: list) -> None:
    status, payload = Client(server.port).rank(body)
    assert status == 422 and payload["detail"][0]["loc"] == loc


def test_too_many_candidates_or_too_large_body_is_413(server: PreforkServer) -> None:
    client = Client(server.port)
    status, payload = client.rank({"user_id": 1, "item_ids": list(range(301))})
    assert status == 413 and "301 candidates, at most 300" in payload["detail"]
    status, payload = client.request("POST", "/v1/rank", raw=b" " * 20_001)
    assert status == 413 and "exceeds the limit of 20000 bytes" in payload["detail"]
    assert client.request("GET", "/healthz")[0] == 200


def test_unknown_user_and_items_and_metrics_summed_over_workers(
    server: PreforkServer, candidates: pl.DataFrame, scorer: Scorer
) -> None:
    def scrape() -> str:
        time.sleep(3 * METRICS_INTERVAL)  # every worker has written a fresh snapshot
        return Client(server.port).request("GET", "/metrics")[1]

    before = scrape()
    body = {"user_id": 10**12, "item_ids": [candidates["item_id"][0], 10**12], "ts": 1651300000000}
    clients = [Client(server.port) for _ in range(4)]
    for c in clients * 3:
        status, payload = c.rank(body)
        assert status == 200 and payload["missing_rows"] == {"user": 2, "item": 1, "author": 1}
    after = scrape()
    ok = 'aptrank_requests_total{code="200",route="/v1/rank"}'
    assert _metric(after, ok) - _metric(before, ok) == 12
    user = 'aptrank_missing_snapshot_rows_total{entity="user"}'
    assert _metric(after, user) - _metric(before, user) == 24
    assert (
        _metric(after, "aptrank_rank_request_seconds_count") - _metric(before, "aptrank_rank_request_seconds_count")
        == 12
    )
    assert _metric(after, f'aptrank_worker_models{{version="{scorer.version}"}}') == WORKERS
    assert _metric(after, "aptrank_ready") == 1


def test_a_killed_worker_is_restarted(server: PreforkServer, candidates: pl.DataFrame) -> None:
    victim = server.pids[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while (victim in server.pids or len(server.pids) < WORKERS) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in server.pids and len(server.pids) == WORKERS
    for _ in range(4):  # the replacement may still be loading: the other worker answers meanwhile
        assert Client(server.port).rank(body_of(rows_of(candidates, 3)))[0] == 200


def test_model_swap_under_load_fails_no_request(
    registry: Any, model_path: Path, other_model_path: Path, run_dir: Path, etl_dir: Path, candidates: pl.DataFrame
) -> None:
    """Clients hammer two workers while the ``champion`` alias moves to version 2: every request gets
    a 200, one connection (one worker) never goes back to version 1, every worker ends on version 2,
    and version 2 answers with its own scores."""
    name = "aptrank-swap-prefork"
    registry.register(name, model_path, run_dir, etl_dir)
    config = WorkerConfig(f"models:/{name}@champion", None, registry.uri, WEIGHTS, poll_seconds=0.1)
    srv = PreforkServer(config, WORKERS, port=0).start()
    rows = rows_of(candidates, 20)
    body = body_of(rows)

    def all_on_v2() -> bool:
        text = Client(srv.port).request("GET", "/metrics")[1]
        return _metric(text, f'aptrank_worker_models{{version="{name}/2"}}') == WORKERS

    pids = srv.pids
    try:
        seen = rank_through_swap(
            srv.port,
            body,
            lambda: registry.register(name, other_model_path, run_dir, etl_dir),  # version 2 becomes champion
            all_on_v2,
            timeout=90,
        )
        finals = [Client(srv.port).rank(body) for _ in range(2 * WORKERS)]
    finally:
        srv.stop()
    assert _gone(pids)
    assert_swapped_without_failure(seen, name)
    new = load_scorer(other_model_path, etl_dir, weights=WEIGHTS).score(rows).score.tolist()
    for status, payload in finals:
        assert status == 200 and payload["model_version"] == f"{name}/2"
        assert_scores(payload, body, new)


def test_cli_workers_serve_and_stop_cleanly(model_path: Path, etl_dir: Path, candidates: pl.DataFrame) -> None:
    cmd = [*CLI, "serve", "--model", str(model_path), "--features", str(etl_dir)]
    cmd += ["--port", "0", "--poll-seconds", "0", "--workers", str(WORKERS)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if match := re.search(rf"on http://127\.0\.0\.1:(\d+) \(loop, {WORKERS} workers", line):
                port = int(match.group(1))
        assert port is not None, "aptrank serve did not report its address"
        workers = [p.pid for p in psutil.Process(proc.pid).children()]
        assert len(workers) == WORKERS
        assert Client(port).rank(body_of(rows_of(candidates, 2)))[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert _gone(workers), "a worker outlived aptrank serve"
