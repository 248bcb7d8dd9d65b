"""``aptrank serve``'s server: the ASGI app (:mod:`serving.app`) under granian
(https://github.com/emmett-framework/granian), a Rust HTTP server (hyper) with Python worker processes.

Chosen over uvicorn (``--workers``) by ``bench/serve_load.py`` (README, "Online scoring"): same app,
same 2 workers, lower p99 at concurrency 8. The HTTP edge cases (chunked bodies, smuggling, slow or
idle clients, pipelining) are hyper's; what aptrank sets is in :class:`ConnectionLimits`.

Start-up, in this process, before any worker exists: the port is bound once as a probe (busy port ->
:class:`StartupError`, exit 1), and the first model is loaded and released (unknown file or registry
URI -> exit 2, tracking server unreachable -> exit 1), so the usual mistakes give one line instead of
a worker's traceback. Workers are fresh interpreters (``spawn``: the Polars and onnxruntime thread
pools this process started are not fork-safe), each loading its own model and polling the URI.

Supervision (:mod:`serving.supervisor`): a worker that dies is respawned, at once after a stable
life, with exponential backoff (1 s doubling to 30 s) when it keeps dying; the server never gives a
worker up. ``/readyz`` answers 503 while fewer workers than started are ready, so the lost capacity
is visible to the load balancer. Each worker listens on its own socket (``SO_REUSEPORT``: even
spread of keep-alive connections), or with ``ConnectionLimits.shared_listener`` all share this
process's one socket and accept queue (no connection refused or reset while workers die, at the
cost of an uneven spread): the trade-off is measured in the supervisor's docstring.

A request body must arrive within ``body_timeout_s`` of the handler starting to read it (408,
connection closed: :mod:`serving.app`); granian has a deadline for the request head only.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from aptrank.serving.errors import ServingError
from aptrank.serving.metrics import MULTIPROC_ENV
from aptrank.serving.settings import ServeSettings

APP_FACTORY = "aptrank.serving.app:app_from_env"
MLFLOW_STARTUP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""A tracking server that does not answer fails start-up in seconds (MLflow's defaults retry for minutes)."""
log = logging.getLogger("aptrank.serve")


class StartupError(ServingError):
    """The server cannot start or go on; ``exit_code`` is the CLI's (2 bad input, 1 environment failure)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection-level limits handed to granian (per worker where it says so).

    ``header_timeout_s``: a client must send a whole request head within this time, and an idle
    keep-alive connection is closed after it (hyper's header read timeout: slowloris clients and idle
    sockets are dropped). ``max_connections``: open connections per worker (granian's backpressure
    holds one permit per accepted connection, as the tests measure); more wait in the kernel's accept
    queue (``backlog``) until the header deadline drops silent ones. ``buffer_bytes``: hyper's
    per-connection read/write buffer; a client that pipelines requests without reading answers is
    not read further, so memory stays bounded. ``shared_listener``: one listening socket for all
    workers instead of one each (:mod:`serving.supervisor`)."""

    header_timeout_s: float = 5.0
    max_connections: int = 1024
    backlog: int = 2048
    buffer_bytes: int = 64 * 1024
    shared_listener: bool = False


def default_workers() -> int:
    """The CPU cores this process may run on, at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


def probe_port(host: str, port: int) -> int:
    """Bind ``host:port`` once and release it; the port (a free one for 0). Busy -> :class:`StartupError`."""
    try:
        with socket.create_server((host, port)) as sock:
            return sock.getsockname()[1]
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use: stop the other server or pass --port", 1
            ) from e
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror or e}", 1) from e


def check_model(settings: ServeSettings) -> str:
    """Load the first model as a worker will, release it, return its version; errors as :class:`StartupError`."""
    from aptrank.serving.app import build_service
    from aptrank.serving.errors import TrackingUnreachableError

    try:
        service = build_service(settings)
    except TrackingUnreachableError as e:
        raise StartupError(str(e), 1) from e
    except (ServingError, ValueError, OSError) as e:
        raise StartupError(str(e), 2) from e
    version = service.holder.scorer.version if service.holder.scorer else "?"
    service.close()
    service.holder.close()
    return version


def serve(
    settings: ServeSettings, host: str, port: int, limits: ConnectionLimits, announce: Callable[[str], None] = print
) -> None:
    """Serve until SIGINT/SIGTERM (graceful: granian stops accepting and lets workers finish);
    ``announce`` gets the line naming the version and address once the model checked out. The
    workers' Prometheus files live in a temporary folder removed at the end."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from aptrank.serving.supervisor import BackoffServer

    port = probe_port(host, port)
    for key, value in MLFLOW_STARTUP_ENV.items():
        os.environ.setdefault(key, value)
    run_dir = tempfile.mkdtemp(prefix="aptrank-serve-")
    try:
        version = check_model(settings)
        os.makedirs(os.path.join(run_dir, "prometheus"))
        os.environ.update({**settings.to_env(), MULTIPROC_ENV: os.path.join(run_dir, "prometheus")})
        multiprocessing.set_start_method("spawn", force=True)
        server = BackoffServer(
            APP_FACTORY,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            http=HTTPModes.http1,
            websockets=False,
            backlog=limits.backlog,
            backpressure=limits.max_connections,
            http1_settings=HTTP1Settings(
                header_read_timeout=int(limits.header_timeout_s * 1000), max_buffer_size=limits.buffer_bytes
            ),
            shared_listener=limits.shared_listener,
            respawn_failed_workers=True,
            workers_kill_timeout=30,
            factory=True,
            log_level="warning",
        )
        announce(f"serving {version} on http://{host}:{port} (granian, {settings.workers} workers; docs at /docs)")
        server.serve()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
