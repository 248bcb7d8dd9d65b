"""The online scorer on one event loop per process (``selectors``, epoll on Linux): the default stack.

One thread multiplexes every connection of the process with non-blocking sockets (the reactor
pattern: Schmidt, "Reactor", PLoP 1994; the design of nginx and of gunicorn's async workers).
Requests are handled one after another in that thread, which is what the GIL allows anyway; the
threaded stack (:mod:`serving.http_stdlib`) hands requests between connection threads instead. In
``bench/serve_load.py`` (2 pre-forked workers, concurrency 8) the loop had the lower p99 in every
run (5.96 / 8.44 / 11.67 ms against 8.32 / 9.07 / 16.31 ms) at about the same server CPU per
request; in one process it took 1.83 against 2.56 ms CPU per request. For more than one core, run
several loops on one listening socket (:mod:`serving.prefork`).

Protocol: HTTP/1.1 with keep-alive and pipelining (answers in request order), HTTP/1.0, ``Expect:
100-continue``, a ``Content-Length`` on every body; heads are parsed by
:func:`serving.http_head.parse_head` (400 / 413 / 431 / 501 answered with ``Connection: close``).
A response leaves in one ``send`` when the socket takes it, Nagle off.

When the listening socket is shared with other processes, a loop with ``n`` open connections waits
``n`` x :data:`ACCEPT_DELAY_S` before ``accept``: the process with fewer connections wins the race, so
keep-alive connections spread evenly. :meth:`LoopServer.request_stop` is safe in a signal handler:
the loop finishes the requests it has fully received, flushes their answers (bounded) and closes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import selectors
import socket
import threading
import time

from aptrank.serving.http_head import (
    ACCEPT_DELAY_S,
    CONTINUE,
    IDLE_TIMEOUT_S,
    MAX_HEAD_BYTES,
    MAX_HEADER_LINE,
    DateCache,
    Head,
    HeadError,
    parse_head,
    response_bytes,
    split_head,
)
from aptrank.serving.service import RankService, Reply

log = logging.getLogger("aptrank.serve")
BACKLOG = 1024
RECV_BYTES = 1 << 16
SWEEP_INTERVAL_S = 1.0
"""How often idle connections are looked for (:data:`serving.http_head.IDLE_TIMEOUT_S`)."""
FLUSH_TIMEOUT_S = 5.0
SERVER_NAME = "aptrank"
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LISTEN, _WAKE = object(), object()


class _Conn:
    """One client connection: bytes received and not yet consumed, bytes to send, parser state."""

    __slots__ = ("active", "closing", "head", "inbuf", "out", "scanned", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.head: Head | None = None
        self.scanned = 0  # bytes of ``inbuf`` already searched for the end of the head
        self.active = time.monotonic()  # last byte received or sent
        self.closing = False  # answer what is queued in ``out``, then close
        self.writing = False  # registered for write readiness


class LoopServer:
    """``start()`` serves in a background thread (tests, benchmarks); ``serve_forever()`` blocks.

    ``sock``: an already bound and listening socket, possibly shared with other processes
    (:mod:`serving.prefork`); ``host``/``port`` are then ignored and accepts are delayed per open
    connection (module docstring).
    """

    def __init__(
        self,
        service: RankService,
        host: str = "127.0.0.1",
        port: int = 8080,
        sock: socket.socket | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.idle_timeout = idle_timeout
        self.accept_delay = 0.0 if sock is None else ACCEPT_DELAY_S
        self.sock = sock if sock is not None else socket.create_server((host, port), backlog=BACKLOG)
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._stopping = False
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}
        self._dates = DateCache()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------------
    def serve_forever(self) -> None:
        sel = self._sel
        sel.register(self.sock, selectors.EVENT_READ, _LISTEN)
        sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        accept_at: float | None = None
        sweep_at = time.monotonic() + SWEEP_INTERVAL_S
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= sweep_at:
                    self._close_idle(now)
                    sweep_at = now + SWEEP_INTERVAL_S
                timeout = min(sweep_at, accept_at if accept_at is not None else sweep_at) - now
                timeout = max(0.0, timeout)
                for key, mask in sel.select(timeout):
                    if key.data is _LISTEN:
                        if self.accept_delay and self._conns:
                            sel.unregister(self.sock)
                            accept_at = time.monotonic() + self.accept_delay * len(self._conns)
                        else:
                            self._accept()
                    elif key.data is _WAKE:
                        self._wake_r.recv(64)
                    else:
                        self._on_ready(key.data, mask)
                if accept_at is not None and time.monotonic() >= accept_at:
                    accept_at = None
                    self._accept()
                    sel.register(self.sock, selectors.EVENT_READ, _LISTEN)
        finally:
            self._finish()

    def start(self) -> LoopServer:
        self._thread = threading.Thread(target=self.serve_forever, name="aptrank-http-loop", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to stop after the requests it holds (safe from a signal handler)."""
        self._stopping = True
        with contextlib.suppress(OSError):  # the wake-up pipe is full or closed: woken or stopped anyway
            self._wake_w.send(b"x")

    def stop(self) -> None:
        """Stop accepting, answer requests already received (bounded), close every socket."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=FLUSH_TIMEOUT_S + 5)
        elif not self._done.is_set():  # never served: nothing in flight, release the sockets
            self._finish()

    def _finish(self) -> None:
        if self._done.is_set():
            return
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        for conn in list(self._conns.values()):
            if conn.out:
                try:
                    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
                    conn.sock.sendall(conn.out)
                except OSError:
                    pass
            self._close(conn)
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()
        self._done.set()

    # ---- connections -------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(1 if self.accept_delay else 64):
            try:
                client, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):  # another process won the race, or none left
                return
            except OSError as e:  # e.g. out of file descriptors: keep serving the open connections
                log.error("accept failed: %s", e)
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client)
            self._conns[client.fileno()] = conn
            self._sel.register(client, selectors.EVENT_READ, conn)

    def _close_idle(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if now - c.active > self.idle_timeout]:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._conns.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        conn.sock.close()

    def _on_ready(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not conn.closing:
                self._receive(conn)
            self._flush(conn)
        except OSError:  # reset or broken pipe: the client went away
            self._close(conn)
        except Exception:  # a bug: drop this connection, keep serving the others
            log.exception("error on connection %s", conn.sock)
            self._close(conn)

    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # the client finished sending: answer what was received, then close
            conn.closing = True
            return
        conn.active = time.monotonic()
        conn.inbuf += data
        self._handle_buffered(conn)

    def _handle_buffered(self, conn: _Conn) -> None:
        """Answer every complete request in ``inbuf``, in order."""
        while not conn.closing:
            if conn.head is None:
                # resume the search where the last one stopped (minus a partial terminator), so a
                # head trickling in byte by byte costs linear, not quadratic, time
                found = _HEAD_END.search(conn.inbuf, max(0, conn.scanned - 3))
                if found is None:
                    conn.scanned = len(conn.inbuf)
                    partial_line = len(conn.inbuf) - conn.inbuf.rfind(b"\n") - 1
                    if len(conn.inbuf) > MAX_HEAD_BYTES or partial_line > MAX_HEADER_LINE + 2:
                        self._answer(conn, Reply(431, "text/plain", b"request head too large\n"), close=True)
                    return
                block = bytes(conn.inbuf[: found.start()])
                del conn.inbuf[: found.end()]
                conn.scanned = 0
                try:
                    head = parse_head(*split_head(block))
                except HeadError as e:
                    self._answer(conn, Reply(e.status, "text/plain", f"{e}\n".encode()), close=True)
                    return
                big = self.service.too_large(head.length)
                if big is not None:  # the unread body makes the connection unusable: answer and close
                    self._answer(conn, big, close=True)
                    return
                if head.expect_continue:
                    conn.out += CONTINUE
                conn.head = head
            head = conn.head
            if len(conn.inbuf) < head.length:
                return
            body = bytes(conn.inbuf[: head.length])
            del conn.inbuf[: head.length]
            conn.head = None
            self._answer(conn, self.service.handle(head.method, head.path, body), close=not head.keep_alive)

    def _answer(self, conn: _Conn, reply: Reply, close: bool) -> None:
        conn.out += response_bytes(
            reply.status, reply.content_type, reply.body, server=SERVER_NAME, date=self._dates.now(), close=close
        )
        conn.closing = conn.closing or close

    def _flush(self, conn: _Conn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent:
                conn.active = time.monotonic()
            del conn.out[:sent]
        if conn.out and not conn.writing:
            self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            conn.writing = True
        elif not conn.out:
            if conn.closing:
                self._close(conn)
            elif conn.writing:
                self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
                conn.writing = False
