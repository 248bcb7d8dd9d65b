"""The online scorer on the standard library's ``http.server``: one thread per connection
(``ThreadingHTTPServer``), HTTP/1.1 keep-alive, Nagle off. Scoring releases the GIL in numpy and
onnxruntime, so concurrent connections overlap; for more than one core, run several of these servers
on one listening socket (:mod:`serving.prefork`).

Per-request Python work is kept small:

* a response (status line, headers and body) leaves in one ``sendall``: with Nagle off, the stdlib's
  separate header and body writes cost a second system call and loopback round of wake-ups;
* the request head is parsed by :func:`serving.http_head.parse_head` (shared with
  :mod:`serving.http_loop`), not by ``http.client.parse_headers``.

This stack is kept as the measured alternative to :mod:`serving.http_loop` (the default): under
concurrent load its thread hand-offs cost CPU per request (``bench/serve_load.py``).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aptrank.serving.http_head import (
    ACCEPT_DELAY_S,
    CONTINUE,
    IDLE_TIMEOUT_S,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    Head,
    HeadError,
    parse_head,
    response_bytes,
)
from aptrank.serving.service import RankService, Reply

log = logging.getLogger("aptrank.serve")
DRAIN_TIMEOUT_S = 5.0


def _text(status: int, message: str) -> Reply:
    return Reply(status, "text/plain", message.encode() + b"\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    service: RankService  # set on the subclass made per server
    head: Head
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Access logs off (metrics count requests); errors still raise."""

    def _send(self, reply: Reply, close: bool = False) -> None:
        """Status line, headers and body in one write (see module docstring)."""
        if close:
            self.close_connection = True
        self.wfile.write(
            response_bytes(
                reply.status,
                reply.content_type,
                reply.body,
                server=self.version_string(),
                date=self.date_time_string(),
                close=close,
            )
        )

    def _refuse(self, status: int, message: str) -> bool:
        self._send(_text(status, message), close=True)
        return False

    def parse_request(self) -> bool:
        """Request line and headers into ``command``, ``path``, ``request_version``, ``headers`` (a
        dict, lower-case names) and ``head`` (:func:`serving.http_head.parse_head`); False after
        answering an error."""
        self.command, self.close_connection = "", True
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        lines: list[bytes] = []
        while len(lines) <= MAX_HEADERS:
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            lines.append(line if len(line) > MAX_HEADER_LINE else line.rstrip(b"\r\n"))
            if len(line) > MAX_HEADER_LINE:
                break
        try:
            head = parse_head(self.raw_requestline, lines)
        except HeadError as e:
            return self._refuse(e.status, str(e))
        self.head = head
        self.command, self.path, self.request_version = head.method, head.path, head.version
        self.headers = head.headers  # type: ignore[assignment]  # a dict is all _serve reads
        self.close_connection = not head.keep_alive
        if head.expect_continue:
            self.wfile.write(CONTINUE)
        return True

    def _serve(self, method: str) -> None:
        big = self.service.too_large(self.head.length)
        if big is not None:  # refuse before reading; the unread body makes the connection unusable
            self._send(big, close=True)
            return
        with self.server.in_flight():
            body = self.rfile.read(self.head.length) if self.head.length > 0 else b""
            self._send(self.service.handle(method, self.path, body), close=self.close_connection)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class _Server(ThreadingHTTPServer):
    """Counts open connections (for the accept race) and requests in flight (for draining)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.connections = 0
        self.requests = 0
        self.idle = threading.Condition()
        self.accept_delay = 0.0

    def in_flight(self) -> _InFlight:
        return _InFlight(self)

    def get_request(self) -> tuple[socket.socket, object]:
        """``accept`` after :data:`ACCEPT_DELAY_S` per open connection when the listening socket is
        shared (``accept_delay`` set): the socket is non-blocking, so a worker that loses the race
        gets ``BlockingIOError`` and goes back to waiting."""
        if self.accept_delay and self.connections:
            time.sleep(self.accept_delay * self.connections)
        return self.socket.accept()

    def process_request(self, request: object, client_address: object) -> None:
        with self.idle:
            self.connections += 1
        super().process_request(request, client_address)  # type: ignore[arg-type]

    def shutdown_request(self, request: object) -> None:
        with self.idle:
            self.connections -= 1
        super().shutdown_request(request)  # type: ignore[arg-type]

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until no request is in flight (True) or ``timeout`` passed (False)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.requests == 0, timeout)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (reset, broken pipe) is routine; anything else is logged."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            log.exception("error while serving %s", client_address)


class _InFlight:
    """Context manager: one request being read, handled and answered."""

    def __init__(self, server: _Server) -> None:
        self.server = server

    def __enter__(self) -> None:
        with self.server.idle:
            self.server.requests += 1

    def __exit__(self, *exc: object) -> None:
        with self.server.idle:
            self.server.requests -= 1
            if self.server.requests == 0:
                self.server.idle.notify_all()


class StdlibServer:
    """``start()`` serves in a background thread (tests, benchmarks); ``serve_forever()`` blocks.

    ``sock``: an already bound and listening socket to serve on, possibly shared with other
    processes (:mod:`serving.prefork`); it is made non-blocking and ``host``/``port`` are ignored.
    """

    def __init__(
        self,
        service: RankService,
        host: str = "127.0.0.1",
        port: int = 8080,
        sock: socket.socket | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        # ``timeout``: StreamRequestHandler's socket timeout; a read that waits longer closes the connection
        handler = type("Handler", (_Handler,), {"service": service, "timeout": idle_timeout})
        self.httpd = _Server((host, port), handler, bind_and_activate=sock is None)
        if sock is not None:
            self.httpd.socket.close()
            sock.setblocking(False)
            self.httpd.socket, self.httpd.server_address = sock, sock.getsockname()
            self.httpd.accept_delay = ACCEPT_DELAY_S
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> StdlibServer:
        self._thread = threading.Thread(target=self.serve_forever, name="aptrank-http", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return (safe from a signal handler in the serving thread:
        ``shutdown()`` waits for the loop to end, so it runs in a helper thread); then call :meth:`stop`."""
        threading.Thread(target=self.httpd.shutdown, name="aptrank-http-shutdown", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close the socket."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.drain()
        self.httpd.server_close()
