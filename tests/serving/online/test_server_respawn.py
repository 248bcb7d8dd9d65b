"""``aptrank serve``'s connection cap and listening socket across worker deaths, on a server of this
module's own (so no other test's order can hide anything): after a killed worker is respawned the
cap still holds, and no new connection is refused while workers die, with ``--shared-listener``
(serving.supervisor: one listening socket, held by the server process, shared by the workers)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_http import ServeProcess, assert_clients_wait_beyond_the_cap, wait_ready

CAP = 32
SILENT = 400
"""Silent sockets: far beyond 2 workers x :data:`CAP` slots."""
HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(model_path: Path, etl_dir: Path) -> Iterator[ServeProcess]:
    """2 workers, at most :data:`CAP` connections each, silent ones dropped after 2 s."""
    args = ["--model", str(model_path), "--features", str(etl_dir), "--poll-seconds", "0"]
    args += ["--max-connections", str(CAP), "--header-timeout", str(HEADER_TIMEOUT_S), "--shared-listener"]
    with ServeProcess(*args) as proc:
        yield proc
        assert proc.stop() == 0


def kill_and_await_respawn(server: ServeProcess, *victims: int) -> None:
    """SIGKILL the workers ``victims`` (pids) at once, then wait until new workers replaced them all
    and ``/readyz`` is 200."""
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while set(victims) & set(server.worker_pids()) or len(server.worker_pids()) < 2:
        assert time.monotonic() < deadline, f"workers {victims} were not replaced"
        time.sleep(0.05)
    assert wait_ready(server.port, 90), "a respawned worker never became ready"


def test_the_cap_holds_after_a_worker_is_respawned(server: ServeProcess) -> None:
    """A worker killed and respawned (``/readyz`` 200 again), then 400 silent sockets: 8 new clients
    all wait (none is answered within 1 s) and are answered once the silent sockets close. With one
    listener per worker (granian's Linux default) the respawned worker began listening after it
    reported ready, all its slots free while the silent sockets queued at the other worker, and
    clients hashed to it were answered at once."""
    kill_and_await_respawn(server, server.worker_pids()[0])
    assert_clients_wait_beyond_the_cap(server.port, SILENT)


def test_no_connection_is_refused_while_every_worker_is_dead(server: ServeProcess) -> None:
    """Both workers killed at once while a client opens a new connection for each request: none is
    refused (the listening socket is the server process's, so it outlives every worker: connections
    wait in its queue until a respawned worker accepts them); the only failures are the connection
    a dying worker had accepted, and requests are answered again afterwards. With one listener per
    worker, connections were refused until a respawned worker listened (seconds here)."""
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    head = sock.recv(64)
                outcomes["ok" if head.startswith(b"HTTP/1.1 200") else "unanswered"] += 1
            except ConnectionRefusedError:
                outcomes["refused"] += 1
            except (ConnectionResetError, BrokenPipeError):
                outcomes["reset"] += 1
            time.sleep(0.005)

    def answered(n: int) -> None:
        deadline = time.monotonic() + 60
        while outcomes["ok"] < n and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        answered(5)
        kill_and_await_respawn(server, *server.worker_pids())
        before = outcomes["ok"]
        answered(before + 20)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert outcomes["refused"] == 0, outcomes
    assert outcomes["ok"] >= before + 20 and outcomes["unanswered"] + outcomes["reset"] <= 2, outcomes
