"""``aptrank serve``: a real server process (granian, 2 workers) on a loopback port, real HTTP requests.

Success (sorted, same numbers as batch scoring), 422 naming the field (malformed JSON, NaN/Infinity,
non-UTF-8, wrong types, out-of-range ``ts`` and ids), 413 (``Content-Length`` and chunked bodies),
unknown user and items, chunked bodies, health/readiness/metrics/docs, and in-process checks of the
service (not ready, a failing request, a broken new version).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from serving_http import VALIDATION_CASES, WEIGHTS, Client, ServeProcess, body_of, metric, rows_of

from aptrank.serving.app import readiness
from aptrank.serving.batch_scoring import score_chunks
from aptrank.serving.candidates import iter_chunks, scan_candidates
from aptrank.serving.holder import ModelHolder
from aptrank.serving.model_source import ModelSource
from aptrank.serving.onnx_model import load_onnx
from aptrank.serving.scorer import Scorer
from aptrank.serving.service import Limits, RankService
from tests.serving.model_files import copy_model

LIMITS = Limits(max_candidates=300, max_body_bytes=20_000)  # as the server of conftest.py


@pytest.fixture(scope="module")
def service(model_path: Path, etl_dir: Path) -> Iterator[RankService]:
    """The service in this process (no HTTP): for what a server process cannot be made to do."""
    holder = ModelHolder(ModelSource(str(model_path)), features_dir=etl_dir, weights=WEIGHTS)
    holder.refresh()
    svc = RankService(holder, LIMITS)
    yield svc
    svc.close()
    holder.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on a fresh connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def chunked(body: bytes, piece: int = 700) -> bytes:
    """``body`` in the chunked transfer coding (RFC 9112 section 7.1)."""
    parts = [body[i : i + piece] for i in range(0, len(body), piece)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


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


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"user_id": 1,', "json_invalid"),  # malformed
        (b'{"user_id": 1, "item_ids": [1], "context": {"tab": NaN}}', "json_invalid"),
        (b'{"user_id": 1, "item_ids": [1], "context": {"tab": Infinity}}', "json_invalid"),
        (b'{"user_id": "\xff\xfe", "item_ids": [1]}', "json_invalid"),  # not UTF-8
    ],
)
def test_bodies_that_are_not_json_are_422(client: Client, raw: bytes, kind: str) -> None:
    status, payload = client.request("POST", "/v1/rank", raw=raw)
    assert status == 422 and payload["detail"][0]["loc"] == ["body"] and payload["detail"][0]["type"] == kind


@pytest.mark.parametrize(
    ("field", "value", "loc"),
    [
        ("ts", 10**17, ["body", "ts"]),
        ("ts", -(10**17), ["body", "ts"]),
        ("ts", 2**63 - 1, ["body", "ts"]),
        ("ts", "9999-12-31T00:00:00Z", ["body", "ts"]),
        ("ts", 1.5, ["body", "ts"]),  # one unit for numbers: integer milliseconds
        ("item_ids", [5239, 2**63], ["body", "item_ids"]),
        ("user_id", -(2**63) - 1, ["body", "user_id"]),
        ("user_id", [1], ["body", "user_id", "int"]),  # wrong type
        ("item_ids", "5239", ["body", "item_ids"]),  # wrong type
        ("context", {"tab": 2**63}, ["body", "context"]),
    ],
)
def test_out_of_range_ts_and_ids_are_422(client: Client, field: str, value: object, loc: list) -> None:
    body = {"user_id": 712, "item_ids": [5239], "ts": 1651300000000, "context": {"tab": 1}, field: value}
    status, payload = client.rank(body)
    assert status == 422, payload
    assert loc in [e["loc"][: len(loc)] for e in payload["detail"]]
    if field == "ts" and isinstance(value, int | str):
        assert "must lie in [1970-01-01T00:00:00+00:00, 2100-01-01T00:00:00+00:00)" in json.dumps(payload)


def test_too_many_candidates_or_too_large_body_is_413(client: Client, server: ServeProcess) -> None:
    status, payload = client.rank({"user_id": 1, "item_ids": list(range(LIMITS.max_candidates + 1))})
    assert status == 413 and "301 candidates, at most 300" in payload["detail"]
    status, payload = client.request("POST", "/v1/rank", raw=b" " * (LIMITS.max_body_bytes + 1))
    assert status == 413 and "exceeds the limit of 20000 bytes" in payload["detail"]
    big = chunked(b" " * (LIMITS.max_body_bytes * 5))  # no Content-Length: refused while streaming
    answer = raw_exchange(server.port, b"POST /v1/rank HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + big)
    assert answer.startswith(b"HTTP/1.1 413") and b"exceeds the limit of 20000 bytes" in answer
    assert client.request("GET", "/healthz")[0] == 200  # the server lives on


def test_chunked_and_content_length_bodies_get_the_same_answer(
    client: Client, server: ServeProcess, candidates: pl.DataFrame
) -> None:
    body = json.dumps(body_of(rows_of(candidates, 30))).encode()
    head = b"POST /v1/rank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
    by_length = raw_exchange(server.port, head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    by_chunks = raw_exchange(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body))
    assert by_length.startswith(b"HTTP/1.1 200") and by_chunks.startswith(b"HTTP/1.1 200")
    assert by_length.split(b"\r\n\r\n", 1)[1] == by_chunks.split(b"\r\n\r\n", 1)[1]
    assert by_length.split(b"\r\n\r\n", 1)[1] == json.dumps(client.rank(json.loads(body))[1]).replace(" ", "").encode()


def test_unknown_user_and_items_are_scored_with_defaults(
    client: Client, server: ServeProcess, candidates: pl.DataFrame
) -> None:
    known = candidates["item_id"][0]
    before = metric(server.metrics(), "aptrank_missing_snapshot_rows_total", entity="user")
    status, payload = client.rank(
        {"user_id": 10**12, "item_ids": [known, 10**12, 10**12 + 1], "ts": 1651300000000, "context": {"tab": 1}}
    )
    assert status == 200
    assert sorted(r["item_id"] for r in payload["results"]) == sorted([known, 10**12, 10**12 + 1])
    assert payload["missing_rows"] == {"user": 3, "item": 2, "author": 2}
    assert payload["oov"]["user"] == 3 and payload["oov"]["item"] == 2
    assert all(0 < r["probabilities"]["click"] < 1 for r in payload["results"])
    assert metric(server.metrics(), "aptrank_missing_snapshot_rows_total", entity="user") == before + 3


def test_health_readiness_metrics_and_docs(client: Client, server: ServeProcess, scorer: Scorer) -> None:
    assert client.request("GET", "/healthz") == (200, "ok\n")
    assert client.request("GET", "/readyz") == (200, f"ready {scorer.version} (2 of 2 workers)\n")
    client.rank({"user_id": 712, "item_ids": [5239]})
    samples = server.metrics()  # parsed by prometheus_client's parser
    assert metric(samples, "aptrank_requests_total", code="200", route="/v1/rank") >= 1
    assert metric(samples, "aptrank_rank_request_seconds_count") >= 1
    assert metric(samples, "aptrank_model_info", version=scorer.version) == 2  # both workers
    assert metric(samples, "aptrank_ready") == 2
    assert metric(samples, "process_cpu_seconds_total") > 0
    assert any(name.startswith("python_gc_collections_total") for name in samples)
    status, doc = client.request("GET", "/openapi.json")
    assert status == 200 and set(doc["paths"]) == {"/v1/rank", "/healthz", "/readyz", "/metrics"}
    example = doc["paths"]["/v1/rank"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert client.rank(example)[0] == 200  # the example Swagger UI offers works
    status, page = client.request("GET", "/docs")
    assert status == 200 and "SwaggerUIBundle" in page and "/openapi.json" in page
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page):
        assert client.request("GET", asset)[0] == 200, asset  # served locally: no network needed
    assert client.request("GET", "/nope") == (404, {"detail": "Not Found"})
    assert client.request("GET", "/v1/rank") == (405, {"detail": "Method Not Allowed"})


def test_not_ready_before_a_model_is_loaded(model_path: Path, etl_dir: Path) -> None:
    holder = ModelHolder(ModelSource(str(model_path)), features_dir=etl_dir)
    service = RankService(holder)
    try:
        assert readiness(holder, 1).status == 503
        assert service.rank(json.dumps({"user_id": 1, "item_ids": [1]}).encode()).status == 503
    finally:
        service.close()
        holder.close()


def test_a_failing_request_is_a_500_and_the_service_lives_on(
    service: RankService, candidates: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Scorer, encoded: object) -> None:
        raise RuntimeError("onnxruntime fell over")

    body = json.dumps(body_of(rows_of(candidates, 3))).encode()
    monkeypatch.setattr(Scorer, "predict", broken)  # the model call: per-user part or whole graph
    reply = service.rank(body)
    assert reply.status == 500 and "RuntimeError: onnxruntime fell over" in json.loads(reply.body)["detail"]
    monkeypatch.undo()
    assert service.rank(body).status == 200


def test_a_broken_new_version_is_skipped_and_the_old_one_kept(
    model_path: Path, other_model_path: Path, etl_dir: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served.onnx"
    copy_model(model_path, served)
    holder = ModelHolder(ModelSource(str(served)), features_dir=etl_dir)
    try:
        assert holder.refresh() and holder.scorer is not None
        first = holder.scorer.version
        served.write_bytes(b"half-copied garbage")
        assert not holder.refresh()
        assert holder.scorer.version == first and holder.metrics.value("model_swap_failures_total") == 1
        old = holder.scorer
        copy_model(other_model_path, served)
        assert holder.refresh() and holder.scorer.version != first
        assert holder.metrics.value("model_swaps_total") == 1
        # the new version computes its per-user part with its own graph (serving.user_precompute)
        new, frame = holder.scorer, old.features.sample(64)
        assert new.user_part is not None and old.user_part is not None and new.user_part.rest is not old.user_part.rest
        whole = Scorer(load_onnx(served), new.features, user_table_max_bytes=0)
        assert np.array_equal(new.score(frame).probabilities, whole.score(frame).probabilities)
        assert not np.array_equal(new.score(frame).probabilities, old.score(frame).probabilities)
    finally:
        holder.close()
