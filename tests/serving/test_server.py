"""``aptrank serve``: a real server on a loopback port, real HTTP requests.

Success (sorted, same numbers as batch scoring), 422 naming the field, 413, unknown user and items,
health/readiness/metrics/docs, the alternative stack, the CLI process, and a registry-alias model
swap under load with zero failed requests (bounded request count).
"""

from __future__ import annotations

import json
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

from aptrank.serving.batch_scoring import score_chunks
from aptrank.serving.candidates import iter_chunks, scan_candidates
from aptrank.serving.holder import ModelHolder
from aptrank.serving.model_source import ModelSource
from aptrank.serving.onnx_model import OnnxModel
from aptrank.serving.scorer import Scorer, load_scorer
from aptrank.serving.server import PREFORK_STACKS, make_server
from aptrank.serving.service import Limits, RankService
from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]
LIMITS = Limits(max_candidates=300, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def service(model_path: Path, etl_dir: Path) -> Iterator[RankService]:
    holder = ModelHolder(ModelSource(str(model_path)), features_dir=etl_dir, weights=WEIGHTS)
    holder.refresh()
    svc = RankService(holder, LIMITS)
    yield svc
    svc.close()
    holder.close()


@pytest.fixture(scope="module", params=PREFORK_STACKS)
def client(service: RankService, request: pytest.FixtureRequest) -> Iterator[Client]:
    """A keep-alive client of each of aptrank's own stacks (the event loop and the threaded one)."""
    server = make_server(service, "127.0.0.1", 0, request.param).start()
    yield Client(server.port)
    server.stop()


def test_rank_returns_sorted_probabilities_and_scores(client: Client, scorer: Scorer, candidates: pl.DataFrame) -> None:
    rows = rows_of(candidates, 50)
    status, payload = client.rank(body_of(rows))
    assert status == 200
    assert payload["model_version"] == scorer.version and payload["weights"] == WEIGHTS
    scores = [r["score"] for r in payload["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 50
    direct = scorer.score(rows)
    order = np.argsort(-direct.score, kind="stable")
    assert [r["item_id"] for r in payload["results"]] == rows["item_id"].to_numpy()[order].tolist()
    assert [r["probabilities"]["like"] for r in payload["results"]] == direct.probabilities[order, 1].tolist()
    assert scores == direct.score[order].tolist()
    top = client.rank({**body_of(rows), "top_k": 3})[1]["results"]
    assert top == payload["results"][:3]


def test_batch_and_online_scores_are_identical(
    client: Client, scorer: Scorer, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    rows = candidates.head(400)
    source = tmp_path / "candidates.parquet"
    rows.write_parquet(source)
    score_chunks(
        scorer,
        iter_chunks(scan_candidates("canonical", source), 64),
        tmp_path / "out.parquet",
        tmp_path / "rejects.parquet",
    )
    batch = pl.read_parquet(tmp_path / "out.parquet").with_row_index("row")
    online: dict[int, float] = {}
    groups = (
        batch.with_columns(ts_ms=pl.col("ts").dt.epoch("ms"))
        .group_by("user_id", "ts_ms", "tab", maintain_order=True)
        .agg("row", "item_id")
    )
    for g in groups.iter_rows(named=True):
        status, payload = client.rank(
            {"user_id": g["user_id"], "item_ids": g["item_id"], "ts": g["ts_ms"], "context": {"tab": g["tab"]}}
        )
        assert status == 200
        by_item = {r["item_id"]: r["score"] for r in payload["results"]}  # a repeated item scores the same
        assert len(payload["results"]) == len(g["item_id"])
        online.update({row: by_item[item] for row, item in zip(g["row"], g["item_id"], strict=True)})
    assert groups.height > 100  # many distinct requests
    assert [online[i] for i in range(batch.height)] == batch["score"].to_list()


@pytest.mark.parametrize(("body", "loc"), VALIDATION_CASES)
def test_validation_errors_are_422_naming_the_field(client: Client, body: dict, loc: list) -> None:
    status, payload = client.rank(body)
    assert status == 422
    assert payload["detail"][0]["loc"] == loc


def test_malformed_json_is_422(client: Client) -> None:
    status, payload = client.request("POST", "/v1/rank", raw=b'{"user_id": 1,')
    assert status == 422 and payload["detail"][0]["loc"] == ["body"]


def test_too_many_candidates_or_too_large_body_is_413(client: Client) -> None:
    status, payload = client.rank({"user_id": 1, "item_ids": list(range(LIMITS.max_candidates + 1))})
    assert status == 413 and "301 candidates, at most 300" in payload["detail"]
    status, payload = client.request("POST", "/v1/rank", raw=b" " * (LIMITS.max_body_bytes + 1))
    assert status == 413 and "exceeds the limit of 20000 bytes" in payload["detail"]
    assert client.request("GET", "/healthz")[0] == 200  # the connection was replaced, the server lives on


def test_unknown_user_and_items_are_scored_with_defaults(
    client: Client, service: RankService, candidates: pl.DataFrame
) -> None:
    known = candidates["item_id"][0]
    before = service.metrics.value("missing_snapshot_rows_total", entity="user")
    status, payload = client.rank(
        {"user_id": 10**12, "item_ids": [known, 10**12, 10**12 + 1], "ts": 1651300000000, "context": {"tab": 1}}
    )
    assert status == 200
    assert sorted(r["item_id"] for r in payload["results"]) == sorted([known, 10**12, 10**12 + 1])
    assert payload["missing_rows"] == {"user": 3, "item": 2, "author": 2}
    assert payload["oov"]["user"] == 3 and payload["oov"]["item"] == 2
    assert all(0 < r["probabilities"]["click"] < 1 for r in payload["results"])
    assert service.metrics.value("missing_snapshot_rows_total", entity="user") == before + 3


def test_health_readiness_metrics_and_docs(client: Client, scorer: Scorer) -> None:
    assert client.request("GET", "/healthz") == (200, "ok\n")
    assert client.request("GET", "/readyz") == (200, f"ready {scorer.version}\n")
    status, text = client.request("GET", "/metrics")
    assert status == 200
    assert re.search(r'^aptrank_requests_total\{code="200",route="/v1/rank"\} [1-9]', text, re.M)
    assert re.search(r"^aptrank_rank_request_seconds_count [1-9]", text, re.M)
    assert f'aptrank_model_info{{version="{scorer.version}"}} 1' in text
    status, doc = client.request("GET", "/openapi.json")
    assert status == 200 and set(doc["paths"]) == {"/v1/rank", "/healthz", "/readyz", "/metrics"}
    assert "RankRequest" in doc["components"]["schemas"]
    status, page = client.request("GET", "/docs")
    assert status == 200 and "POST /v1/rank" in page
    assert client.request("GET", "/nope")[0] == 404
    assert client.request("GET", "/v1/rank")[0] == 405


def test_not_ready_before_a_model_is_loaded(model_path: Path, etl_dir: Path) -> None:
    holder = ModelHolder(ModelSource(str(model_path)), features_dir=etl_dir)
    service = RankService(holder)
    try:
        assert service.handle("GET", "/readyz").status == 503
        assert service.handle("POST", "/v1/rank", json.dumps({"user_id": 1, "item_ids": [1]}).encode()).status == 503
    finally:
        service.close()
        holder.close()


def test_fastapi_stack_gives_the_same_answers(service: RankService, client: Client, candidates: pl.DataFrame) -> None:
    body = body_of(rows_of(candidates, 5))
    server = make_server(service, "127.0.0.1", 0, "fastapi").start()
    try:
        other = Client(server.port)
        assert other.rank(body) == client.rank(body)
        assert other.rank({"user_id": 1, "item_ids": []}) == client.rank({"user_id": 1, "item_ids": []})
        assert other.request("POST", "/v1/rank", raw=b" " * 30_000)[0] == 413
    finally:
        server.stop()


def test_cli_serves_on_loopback(model_path: Path, etl_dir: Path) -> None:
    cmd = [
        *CLI,
        "serve",
        "--model",
        str(model_path),
        "--features",
        str(etl_dir),
        "--port",
        "0",
        "--poll-seconds",
        "0",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if match := re.search(r"on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        assert port is not None, "aptrank serve did not report its address"
        status, payload = Client(port).rank(
            {"user_id": 712, "item_ids": [5239, 6831], "ts": 1651300000000, "context": {"tab": 1}}
        )
        assert status == 200 and len(payload["results"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("stack", PREFORK_STACKS)
def test_model_swap_under_load_fails_no_request(
    stack: str,
    registry: Any,
    model_path: Path,
    other_model_path: Path,
    run_dir: Path,
    etl_dir: Path,
    candidates: pl.DataFrame,
) -> None:
    """Clients hammer the server while the ``champion`` alias moves to version 2: every request gets a
    200 from exactly one version, versions never go back, and version 2 answers with its own scores."""
    name = f"aptrank-swap-{stack}"
    registry.register(name, model_path, run_dir, etl_dir)
    holder = ModelHolder(ModelSource(f"models:/{name}@champion", registry.uri), features_dir=None, weights=WEIGHTS)
    holder.refresh()
    service = RankService(holder)
    server = make_server(service, "127.0.0.1", 0, stack).start()
    holder.start(poll_seconds=0.1)
    rows = rows_of(candidates, 20)
    body = body_of(rows)
    try:
        seen = rank_through_swap(
            server.port,
            body,
            lambda: registry.register(name, other_model_path, run_dir, etl_dir),  # version 2 becomes champion
            lambda: holder.key == f"{name}/2",
            timeout=60,
        )
        final_status, payload = Client(server.port).rank(body)
    finally:
        server.stop()
        holder.close()
        service.close()
    assert_swapped_without_failure(seen, name)
    assert holder.metrics.value("model_swaps_total") == 1
    assert final_status == 200 and payload["model_version"] == f"{name}/2"
    assert_scores(payload, body, load_scorer(other_model_path, etl_dir, weights=WEIGHTS).score(rows).score.tolist())


def test_a_failing_request_is_a_500_and_the_server_lives_on(
    client: Client, service: RankService, candidates: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: OnnxModel, inputs: object) -> None:
        raise RuntimeError("onnxruntime fell over")

    monkeypatch.setattr(OnnxModel, "predict", broken)
    status, payload = client.rank(body_of(rows_of(candidates, 3)))
    assert status == 500 and "RuntimeError: onnxruntime fell over" in payload["detail"]
    monkeypatch.undo()
    assert client.rank(body_of(rows_of(candidates, 3)))[0] == 200


def test_a_broken_new_version_is_skipped_and_the_old_one_kept(
    model_path: Path, other_model_path: Path, etl_dir: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served.onnx"
    served.write_bytes(model_path.read_bytes())
    holder = ModelHolder(ModelSource(str(served)), features_dir=etl_dir)
    try:
        assert holder.refresh() and holder.scorer is not None
        first = holder.scorer.version
        served.write_bytes(b"half-copied garbage")
        assert not holder.refresh()
        assert holder.scorer.version == first and holder.metrics.value("model_swap_failures_total") == 1
        served.write_bytes(other_model_path.read_bytes())
        assert holder.refresh() and holder.scorer.version != first
        assert holder.metrics.value("model_swaps_total") == 1
    finally:
        holder.close()


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection, read until the server closes it."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /v1/rank\r\n\r\n", b"400"),
        (b"POST /v1/rank HTTP/2.0\r\n\r\n", b"400"),
        (b"POST /v1/rank HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /v1/rank HTTP/1.1\r\nContent-Length: ten\r\n\r\n", b"400"),
        (b"POST /v1/rank HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", b"400"),
        (b"POST /v1/rank HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nX-A: " + b"a" * 9000, b"431"),  # refused before the head ends
        (b"POST /v1/rank HTTP/1.1\r\nContent-Length: 20001\r\n\r\n", b"413"),
    ],
)
def test_malformed_request_heads_are_refused_and_the_connection_closed(
    client: Client, head: bytes, status: bytes
) -> None:
    answer = _exchange(client.port, head)
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close\r\n" in answer


def test_keep_alive_pipelining_http10_and_expect_continue(client: Client, candidates: pl.DataFrame) -> None:
    body = json.dumps(body_of(rows_of(candidates, 3))).encode()
    post = b"POST /v1/rank HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    closing = b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
    answer = _exchange(client.port, post + post + closing)  # three requests in one write, answered in order
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and answer.count(b'"model_version"') == 2
    assert answer.endswith(b"ok\n")
    assert _exchange(client.port, b"GET /healthz HTTP/1.0\r\n\r\n").endswith(b"ok\n")  # 1.0: closes by default
    answer = _exchange(client.port, post.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_a_head_trickling_in_is_answered(client: Client) -> None:
    """A request arriving a few bytes at a time (the event loop resumes its search for the end of
    the head where it stopped) gets its answer."""
    import socket

    request = b"GET /healthz HTTP/1.1\r\nX-Trickle: 1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", client.port), timeout=10) as sock:
        for i in range(0, len(request), 3):
            sock.sendall(request[i : i + 3])
            time.sleep(0.002)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok\n")


def test_idle_and_stalled_connections_are_closed(service: RankService) -> None:
    """The event loop closes a connection that sent nothing, and one that stalled mid-head, after
    its idle timeout; a connection that keeps talking stays open."""
    import socket

    from aptrank.serving.http_loop import LoopServer

    server = LoopServer(service, "127.0.0.1", 0, idle_timeout=0.5).start()
    try:
        quiet = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nX-Half: ")
        busy = Client(server.port)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # a request every 0.2 s: never idle for 0.5 s
            assert busy.request("GET", "/healthz")[0] == 200
            time.sleep(0.2)
        assert quiet.recv(1) == b"" and stalled.recv(1) == b""  # closed by the server, no answer
        assert busy.request("GET", "/healthz")[0] == 200
    finally:
        server.stop()
