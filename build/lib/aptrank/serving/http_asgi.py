"""The online scorer as an ASGI app (FastAPI on uvicorn), the alternative stack measured against the
standard library server in ``bench/serve_load.py``. Same :class:`~serving.service.RankService`, so
routes, validation and payloads are identical; scoring runs in the thread pool (it blocks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from aptrank.serving.service import RankService

STARTUP_TIMEOUT_S = 20.0


def make_app(service: RankService) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def route(request: Request, path: str) -> Response:
        header = request.headers.get("content-length")
        big = service.too_large(int(header)) if header and header.isdigit() else None
        if big is None:
            body = await request.body()
            reply = await run_in_threadpool(service.handle, request.method, "/" + path, body)
        else:
            reply = big
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)

    return app


class AsgiServer:
    """Same interface as :class:`serving.http_stdlib.StdlibServer`."""

    def __init__(self, service: RankService, host: str = "127.0.0.1", port: int = 8080) -> None:
        # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket says so; with proto 0 every response waits ~40 ms for the client's delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(
            make_app(service),
            log_level="warning",
            access_log=False,
            http="h11",
            loop="asyncio",
            lifespan="off",
            backlog=128,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> AsgiServer:
        self._thread = threading.Thread(target=self.serve_forever, name="aptrank-asgi", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def request_stop(self) -> None:
        """Ask uvicorn to stop (safe from a signal handler)."""
        self.server.should_exit = True

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
