"""Server stacks by name; ``stdlib`` is the default (lower p99 at concurrency 8 in
``bench/results/serve_load.json``)."""

from __future__ import annotations

from typing import Protocol

from serving.service import RankService

DEFAULT_STACK = "stdlib"
STACKS: tuple[str, ...] = ("stdlib", "fastapi")


class Server(Protocol):
    host: str
    port: int

    def start(self) -> Server: ...

    def serve_forever(self) -> None: ...

    def stop(self) -> None: ...


def make_server(service: RankService, host: str = "127.0.0.1", port: int = 8080, stack: str = DEFAULT_STACK) -> Server:
    """A server for ``service`` bound to ``host:port`` (port 0: any free port; see ``.port``)."""
    if stack == "stdlib":
        from serving.http_stdlib import StdlibServer

        return StdlibServer(service, host, port)
    if stack == "fastapi":
        from serving.http_asgi import AsgiServer

        return AsgiServer(service, host, port)
    raise ValueError(f"--stack '{stack}': unknown; known: {', '.join(STACKS)}")
