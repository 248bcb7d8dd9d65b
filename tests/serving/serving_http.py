"""HTTP helpers shared by the server tests: a keep-alive client, request bodies from real candidate
rows, the validation cases every server mode must answer with 422 naming the field, and the
model-swap-under-load driver both server modes are tested with."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import polars as pl

WEIGHTS = {"click": 1.0, "like": 2.0, "finish": 1.0}
SWAP_MAX_REQUESTS = 20_000
"""Bound on one client's requests in :func:`rank_through_swap` (~40 s at its pace)."""
VALIDATION_CASES: list[tuple[dict, list]] = [
    ({"item_ids": [1]}, ["body", "user_id"]),
    ({"user_id": 1.5, "item_ids": [1]}, ["body", "user_id", "int"]),
    ({"user_id": 1, "item_ids": []}, ["body", "item_ids"]),
    ({"user_id": 1, "item_ids": [1, "x"]}, ["body", "item_ids"]),
    ({"user_id": 1, "item_ids": [1], "ts": "yesterday"}, ["body", "ts", "int"]),
    ({"user_id": 1, "item_ids": [1], "context": {"channel": 3}}, ["body", "context", "channel"]),
    ({"user_id": 1, "item_ids": [1], "top_k": 0}, ["body", "top_k"]),
    ({"user_id": 1, "item_ids": [1], "extra": True}, ["body", "extra"]),
]


class Client:
    """One keep-alive HTTP/1.1 connection to a server on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = response.read()
        if response.getheader("Connection") == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(payload) if kind.startswith("application/json") else payload.decode()

    def rank(self, body: dict) -> tuple[int, Any]:
        return self.request("POST", "/v1/rank", body)

    def close(self) -> None:
        self.conn.close()


def rows_of(candidates: pl.DataFrame, n: int) -> pl.DataFrame:
    """The first candidate's user, ts and tab with the first ``n`` distinct items."""
    first = candidates.row(0, named=True)
    items = candidates["item_id"].unique(maintain_order=True).head(n)
    return pl.DataFrame(
        {"user_id": [first["user_id"]] * n, "item_id": items, "ts": [first["ts"]] * n, "tab": [first["tab"]] * n},
        schema=candidates.schema,
    )


def body_of(rows: pl.DataFrame) -> dict:
    """A request for rows sharing one user, ts and tab (ts as ISO 8601)."""
    return {
        "user_id": rows["user_id"][0],
        "item_ids": rows["item_id"].to_list(),
        "ts": rows["ts"][0].isoformat(),
        "context": {"tab": rows["tab"][0]},
    }


def rank_through_swap(
    port: int, body: dict, promote: Callable[[], None], swapped: Callable[[], bool], timeout: float
) -> list[list[tuple[int, Any]]]:
    """Four keep-alive clients send ``body``, one request every ~2 ms or slower, while ``promote()``
    moves the champion alias (called once every client has an answer); they stop 0.3 s after
    ``swapped()`` holds (or after ``timeout`` s), and after :data:`SWAP_MAX_REQUESTS` requests each
    at most. Returns, per client, (status, model version) of every answer in order.

    The clients keep going until the swap is seen rather than for a fixed count: a fast server can
    answer a fixed count before the registry has even made the new version."""
    seen: list[list[tuple[int, Any]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def load(k: int) -> None:
        c = Client(port)
        for _ in range(SWAP_MAX_REQUESTS):
            status, payload = c.rank(body)
            seen[k].append((status, payload.get("model_version") if isinstance(payload, dict) else payload))
            if stop.is_set():
                return
            time.sleep(0.002)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        while not all(seen) and time.monotonic() < deadline:  # every client answered by version 1
            time.sleep(0.01)
        promote()
        deadline = time.monotonic() + timeout
        while not swapped() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return seen


def assert_swapped_without_failure(seen: list[list[tuple[int, Any]]], name: str) -> None:
    """Every answer a 200 from version 1 or 2 of ``name``, both seen, and no client back on 1 after 2."""
    flat = [s for thread in seen for s in thread]
    assert flat and all(status == 200 for status, _ in flat), [s for s in flat if s[0] != 200][:3]
    for thread in seen:
        versions = [v for _, v in thread]
        assert set(versions) <= {f"{name}/1", f"{name}/2"}
        assert versions == sorted(versions), "a client saw version 1 after version 2"
    assert any(v == f"{name}/2" for _, v in flat) and any(v == f"{name}/1" for _, v in flat)


def assert_scores(payload: dict, body: dict, scores: list[float]) -> None:
    """The response ranks ``body``'s items with exactly ``scores`` (in request order)."""
    assert {r["item_id"]: r["score"] for r in payload["results"]} == dict(zip(body["item_ids"], scores, strict=True))
