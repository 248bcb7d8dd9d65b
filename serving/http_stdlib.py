"""The online scorer on the standard library's ``http.server``: one thread per connection
(``ThreadingHTTPServer``), HTTP/1.1 keep-alive, Nagle off. Scoring releases the GIL in Polars and
onnxruntime, so concurrent connections overlap. Chosen by measurement, see ``bench/serve_load.py``.
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.service import RankService, Reply

log = logging.getLogger("aptrank.serve")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    service: RankService  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:
        """Access logs off (metrics count requests); errors still raise."""

    def _send(self, reply: Reply, close: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)

    def _serve(self, method: str) -> None:
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self._send(Reply(400, "text/plain", b"bad Content-Length\n"), close=True)
            return
        big = self.service.too_large(length)
        if big is not None:  # refuse before reading; the unread body makes the connection unusable
            self._send(big, close=True)
            return
        body = self.rfile.read(length) if length > 0 else b""
        self._send(self.service.handle(method, self.path, body))

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (reset, broken pipe) is routine; anything else is logged."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            log.exception("error while serving %s", client_address)


class StdlibServer:
    """``start()`` serves in a background thread (tests, benchmarks); ``serve_forever()`` blocks."""

    def __init__(self, service: RankService, host: str = "127.0.0.1", port: int = 8080) -> None:
        handler = type("Handler", (_Handler,), {"service": service})
        self.httpd = _Server((host, port), handler)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> StdlibServer:
        self._thread = threading.Thread(target=self.serve_forever, name="aptrank-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
