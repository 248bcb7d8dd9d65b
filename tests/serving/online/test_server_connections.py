"""Connection-level behaviour of ``aptrank serve`` (granian) against a real server process: request
smuggling (``Content-Length`` with ``Transfer-Encoding``), a slowloris client trickling its head or its
body, idle
keep-alive connections (bounded memory, closed after the header timeout), 500 idle sockets while a
client measures latency, and unread pipelined requests (bounded memory)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import numpy as np
import polars as pl
import psutil
from serving_http import Client, ServeProcess, body_of, rows_of

HEADER_TIMEOUT_S = 2.0  # as the server of conftest.py
BODY_TIMEOUT_S = 2.0  # as the server of conftest.py
MB = 1 << 20


def workers_rss(server: ServeProcess) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in server.worker_pids())


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` s (end of file or reset, no answer)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def latencies_ms(port: int, body: dict, n: int) -> np.ndarray:
    client, out = Client(port), []
    for _ in range(n):
        t0 = time.perf_counter()
        assert client.rank(body)[0] == 200
        out.append((time.perf_counter() - t0) * 1000)
    client.close()
    return np.array(out)


def test_content_length_with_transfer_encoding_is_not_smuggled(server: ServeProcess) -> None:
    """Read by Transfer-Encoding alone, answered once, connection closed: the request hidden behind
    the chunked body is never read (RFC 9112 section 6.3)."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    head = b"POST /v1/rank HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(head + b"0\r\n\r\n" + smuggled)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
        elapsed = time.monotonic() - t0
    assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer.lower()
    assert elapsed < HEADER_TIMEOUT_S  # closed right after the answer, not by the idle timeout


def test_a_trickled_head_is_dropped_while_others_are_answered(server: ServeProcess, candidates: pl.DataFrame) -> None:
    """50 slowloris clients send a byte of their head every 0.2 s (never idle): each is closed once
    the header deadline passes, and a normal client is answered meanwhile."""
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(50)]
    stop = threading.Event()

    def trickle() -> None:
        head = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        for i in range(len(head)):
            if stop.wait(0.2):
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(head[i : i + 1])

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        times = latencies_ms(server.port, body_of(rows_of(candidates, 20)), 50)
        closed = [closed_by_server(s, HEADER_TIMEOUT_S + 3) for s in socks]
    finally:
        stop.set()
        thread.join()
        for s in socks:
            s.close()
    assert all(closed), f"{closed.count(False)} of 50 trickling connections still open"
    assert np.percentile(times, 99) < 1000


def test_a_trickled_body_gets_408_within_the_deadline_while_others_are_answered(
    server: ServeProcess, candidates: pl.DataFrame
) -> None:
    """The head arrives at once, then the body a byte a second: the client gets 408 once the body
    deadline passes and the connection is closed (its slot freed); a normal client is answered meanwhile."""
    body = json.dumps(body_of(rows_of(candidates, 20))).encode()
    head = b"POST /v1/rank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S + 5) as sock:

        def trickle() -> None:
            for i in range(len(body)):
                if stop.wait(1.0):
                    return
                with contextlib.suppress(OSError):
                    sock.send(body[i : i + 1])

        sock.sendall(head)
        t0 = time.monotonic()
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            times = latencies_ms(server.port, body_of(rows_of(candidates, 20)), 20)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server closes
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            thread.join()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout" and b"connection: close" in rest.lower(), answer
    detail = json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]
    assert detail.startswith(f"request body not received within {BODY_TIMEOUT_S:g} s (")
    assert BODY_TIMEOUT_S - 0.1 <= elapsed < BODY_TIMEOUT_S + 3, f"answered after {elapsed:.2f} s"
    assert np.percentile(times, 99) < 1000


def test_idle_keep_alive_connections_hold_bounded_memory_and_are_closed(server: ServeProcess) -> None:
    """200 keep-alive connections go idle after one request: the workers grow by a few MB at most,
    another client is answered, and the idle ones are closed after the header timeout."""
    before = workers_rss(server)
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        socks.append(s)
    try:
        for s in socks:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        grown = workers_rss(server) - before
        assert Client(server.port).request("GET", "/healthz")[0] == 200
        assert grown < 20 * MB, f"workers grew by {grown / MB:.1f} MB for 200 idle connections"
        assert all(closed_by_server(s, HEADER_TIMEOUT_S + 3) for s in socks)
    finally:
        for s in socks:
            s.close()


def test_500_idle_connections_keep_latency_within_2x(server: ServeProcess, candidates: pl.DataFrame) -> None:
    """p99 of a client's requests with 500 idle sockets open against the p99 without them: five
    alternating rounds of each, medians compared (the cores are shared with other work)."""
    body = body_of(rows_of(candidates, 20))
    latencies_ms(server.port, body, 30)  # warm
    alone, crowded = [], []
    for _ in range(5):
        alone.append(np.percentile(latencies_ms(server.port, body, 120), 99))
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(500)]
        try:
            time.sleep(0.2)  # let the workers accept them
            crowded.append(np.percentile(latencies_ms(server.port, body, 120), 99))
        finally:
            for s in idle:
                s.close()
    base, loaded = float(np.median(alone)), float(np.median(crowded))
    assert loaded <= 2 * base, f"p99 {loaded:.2f} ms with 500 idle sockets, {base:.2f} ms without ({crowded}, {alone})"


def test_unread_pipelined_requests_do_not_grow_a_worker(server: ServeProcess) -> None:
    """Up to 300k pipelined requests whose answers are never read: the worker stops reading once its
    output is not taken (bounded buffers; what the kernel's socket buffers hold, a few MB, is all that
    gets through), so its memory stays flat."""
    before = workers_rss(server)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    sent = [0]

    def flood() -> None:
        try:
            for _ in range(300):
                sock.sendall(request * 1000)
                sent[0] += 1000
        except OSError:
            pass

    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(3)
    grown = workers_rss(server) - before
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    thread.join()
    assert sent[0] < 300_000, "the server took every request without answers being read"
    assert grown < 30 * MB, f"workers grew by {grown / MB:.1f} MB"
    assert json.loads(json.dumps(Client(server.port).request("GET", "/healthz")[1])) == "ok\n"
