"""Server stacks by name. ``loop`` (one event loop per process, :mod:`serving.http_loop`) is the
default: it had the lower p99 at concurrency 8 in every comparison run of ``bench/serve_load.py``
(see :mod:`serving.http_loop`); ``stdlib`` (thread per connection) and ``fastapi`` (uvicorn) are the
alternatives. ``loop`` and ``stdlib`` also run as pre-fork workers (:mod:`serving.prefork`)."""

from __future__ import annotations

import gc
import socket
from typing import Protocol

from aptrank.serving.http_head import IDLE_TIMEOUT_S
from aptrank.serving.service import RankService

DEFAULT_STACK = "loop"
STACKS: tuple[str, ...] = ("loop", "stdlib", "fastapi")
PREFORK_STACKS: tuple[str, ...] = ("loop", "stdlib")


class Server(Protocol):
    host: str
    port: int

    def start(self) -> Server: ...

    def serve_forever(self) -> None: ...

    def stop(self) -> None: ...

    def request_stop(self) -> None: ...


def make_server(
    service: RankService,
    host: str = "127.0.0.1",
    port: int = 8080,
    stack: str = DEFAULT_STACK,
    sock: socket.socket | None = None,
    idle_timeout: float = IDLE_TIMEOUT_S,
) -> Server:
    """A server for ``service`` bound to ``host:port`` (port 0: any free port; see ``.port``), or
    serving on ``sock``, a listening socket shared with other worker processes. ``idle_timeout``:
    seconds after which a silent connection is closed (loop and stdlib stacks)."""
    if sock is not None and stack not in PREFORK_STACKS:
        raise ValueError(f"--stack '{stack}' cannot serve on a shared socket; use one of {', '.join(PREFORK_STACKS)}")
    if stack == "loop":
        from aptrank.serving.http_loop import LoopServer

        return LoopServer(service, host, port, sock, idle_timeout)
    if stack == "stdlib":
        from aptrank.serving.http_stdlib import StdlibServer

        return StdlibServer(service, host, port, sock, idle_timeout)
    if stack == "fastapi":
        from aptrank.serving.http_asgi import AsgiServer

        return AsgiServer(service, host, port)
    raise ValueError(f"--stack '{stack}': unknown; known: {', '.join(STACKS)}")


def freeze_startup_heap() -> None:
    """Move every object alive now (imported modules, the loaded model and snapshot tables) out of
    the garbage collector's reach (``gc.freeze``): a full collection then scans only what requests
    allocate. Measured on the demo model: a full collection over the startup heap took ~66 ms, a
    pause that lands on whichever request triggers it (the p99 of ``bench/serve_load.py``). Objects
    of a model swapped out later are ordinary garbage again once unreferenced; frozen ones are only
    freed by reference counting (the startup heap lives as long as the process anyway)."""
    gc.collect()
    gc.freeze()
