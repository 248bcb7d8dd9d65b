"""The online scorer on the standard library's ``http.server``: one thread per connection
(``ThreadingHTTPServer``), HTTP/1.1 keep-alive, Nagle off. Scoring releases the GIL in numpy and
onnxruntime, so concurrent connections overlap; for more than one core, run several of these servers
on one listening socket (:mod:`serving.prefork`). Chosen by measurement, see ``bench/serve_load.py``.

Per-request Python work is kept small:

* a response (status line, headers and body) leaves in one ``sendall``: with Nagle off, the stdlib's
  separate header and body writes cost a second system call and loopback round of wake-ups;
* the request head is parsed by :meth:`_Handler.parse_request` (lines split into a dict of
  lower-case names) instead of ``http.client.parse_headers``, which runs the ``email`` package's
  parser on every request. It answers 400 for a malformed request line, header line or
  ``Content-Length``, 431 for oversized heads, 501 for ``Transfer-Encoding`` (bodies must carry a
  ``Content-Length``), and honours ``Connection`` and ``Expect: 100-continue``.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.service import RankService, Reply

log = logging.getLogger("aptrank.serve")
MAX_HEADERS = 100
MAX_HEADER_LINE = 8192
ACCEPT_DELAY_S = 0.0005
"""Per open connection, how long a worker of a shared listening socket waits before ``accept``: the
worker with fewer connections wins the race, so keep-alive connections spread evenly (see
:meth:`_Server.get_request`)."""
DRAIN_TIMEOUT_S = 5.0


def _text(status: int, message: str) -> Reply:
    return Reply(status, "text/plain", message.encode() + b"\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    service: RankService  # set on the subclass made per server
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Access logs off (metrics count requests); errors still raise."""

    def _send(self, reply: Reply, close: bool = False) -> None:
        """Status line, headers and body in one write (see module docstring)."""
        connection = ""
        if close:
            self.close_connection = True
            connection = "Connection: close\r\n"
        head = (
            f"{self.protocol_version} {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
            f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
            f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n{connection}\r\n"
        )
        self.wfile.write(head.encode("latin-1") + reply.body)

    def _refuse(self, status: int, message: str) -> bool:
        self._send(_text(status, message), close=True)
        return False

    def parse_request(self) -> bool:
        """Request line and headers into ``command``, ``path``, ``request_version`` and ``headers``
        (a dict, lower-case names); False after answering an error (see module docstring)."""
        self.command, self.close_connection = "", True
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        parts = self.requestline.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return self._refuse(400, f"bad request line {self.requestline[:100]!r}")
        self.command, self.path, self.request_version = parts
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                return self._refuse(431, "header line too long")
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if not colon or not name:
                return self._refuse(400, f"bad header line {line[:100]!r}")
            if name == "content-length" and headers.get(name, value) != value:
                return self._refuse(400, "conflicting Content-Length headers")
            headers[name] = value
        else:
            return self._refuse(431, f"more than {MAX_HEADERS} headers")
        self.headers = headers  # type: ignore[assignment]  # a dict is all _serve reads
        if "transfer-encoding" in headers:
            return self._refuse(501, "Transfer-Encoding is not supported; send a Content-Length")
        connection = headers.get("connection", "").lower()
        if self.request_version == "HTTP/1.1":
            self.close_connection = connection == "close"
        else:
            self.close_connection = connection != "keep-alive"
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _serve(self, method: str) -> None:
        header = self.headers.get("content-length")
        length = int(header) if header is not None and header.isdigit() else (0 if header is None else -1)
        if length < 0:
            self._send(_text(400, "bad Content-Length"), close=True)
            return
        big = self.service.too_large(length)
        if big is not None:  # refuse before reading; the unread body makes the connection unusable
            self._send(big, close=True)
            return
        with self.server.in_flight():
            body = self.rfile.read(length) if length > 0 else b""
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
        self, service: RankService, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None
    ) -> None:
        handler = type("Handler", (_Handler,), {"service": service})
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

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close the socket."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
        self.httpd.drain()
        self.httpd.server_close()
