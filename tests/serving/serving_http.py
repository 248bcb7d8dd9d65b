"""HTTP helpers shared by the server tests: a keep-alive client, request bodies from real candidate
rows, and the validation cases every server mode must answer with 422 naming the field."""

from __future__ import annotations

import http.client
import json
from typing import Any

import polars as pl

WEIGHTS = {"click": 1.0, "like": 2.0, "finish": 1.0}
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
