"""HTTP helpers shared by the server tests: ``aptrank serve`` as a child process on a loopback port
(:class:`ServeProcess`), a keep-alive client, request bodies from real candidate rows, the validation
cases answered with 422 naming the field, and the model-swap-under-load driver."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120.0

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
        try:
            self.conn.request(method, path, data, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closed an idle keep-alive connection (its idle timeout): one retry, new connection
            self.conn.close()
            self.conn.request(method, path, data, {"Content-Type": "application/json"})
            response = self.conn.getresponse()
        payload = response.read()
        if response.getheader("Connection") == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(payload) if kind.startswith("application/json") else payload.decode(
            errors="replace"
        )

    def rank(self, body: dict) -> tuple[int, Any]:
        return self.request("POST", "/v1/rank", body)

    def close(self) -> None:
        self.conn.close()


class ServeProcess:
    """``aptrank serve ARGS`` in a child process on a free loopback port; ``start()`` returns once
    ``/readyz`` answers 200 (every worker has its model)."""

    def __init__(self, *args: str, workers: int = 2) -> None:
        from aptrank.serving.runner import probe_port

        self.port = probe_port("127.0.0.1", 0)
        self.args = [*CLI, "serve", *args, "--port", str(self.port), "--workers", str(workers)]
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        if not wait_ready(self.port, START_TIMEOUT_S, self.proc):
            self.stop()
            raise AssertionError(f"aptrank serve did not become ready: {self.stderr()}")
        return self

    def worker_pids(self) -> list[int]:
        """The live worker processes (granian spawns them with multiprocessing)."""
        assert self.proc is not None
        pids = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):  # a killed one not yet reaped
                if "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
        return pids

    def metrics(self) -> dict[str, float]:
        """``/metrics`` parsed by prometheus_client's parser: sample name{labels} -> value."""
        status, text = Client(self.port).request("GET", "/metrics")
        assert status == 200
        return {
            s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else ""): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> int:
        """SIGTERM (graceful stop); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stderr(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``/readyz`` until 200 (True), the process exits or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if Client(port).request("GET", "/readyz")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def assert_clients_wait_beyond_the_cap(port: int, silent: int = 400, clients: int = 8, wait_s: float = 1.0) -> None:
    """``silent`` sockets that never send a byte (far beyond the workers' connection slots), then,
    1 s later, ``clients`` new clients, whose connections the kernel places as it likes: none is
    answered within ``wait_s`` while the silent sockets are open (they hold every slot, the rest
    queue ahead), and every one is answered 200 once they close. Order, not latency, is asserted."""
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(silent)]
    answers: list[tuple[int, float]] = []

    def ask() -> None:
        status = Client(port).request("GET", "/healthz")[0]
        answers.append((status, time.monotonic()))

    threads = [threading.Thread(target=ask) for _ in range(clients)]
    try:
        time.sleep(1.0)  # every worker that is up is listening by now, whatever /readyz said
        for t in threads:
            t.start()
        time.sleep(wait_s)
        unanswered_until = time.monotonic()
    finally:
        for s in idle:
            s.close()
    for t in threads:
        t.join(timeout=60)
    assert [status for status, _ in answers] == [200] * clients, answers
    early = [round(unanswered_until - at, 2) for _, at in answers if at <= unanswered_until]
    assert not early, f"{len(early)} of {clients} clients beyond the cap answered, up to {max(early)} s early"


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """One sample of :meth:`ServeProcess.metrics` (0 when absent)."""
    return samples.get(name + (json.dumps(labels, sort_keys=True) if labels else ""), 0.0)


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
