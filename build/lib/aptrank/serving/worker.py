"""One worker process of the pre-fork server (:mod:`serving.prefork`): ``python -m serving.worker``.

The worker inherits the supervisor's listening socket (``--listen-fd``) and one end of a socket pair
(``--channel-fd``). It loads its own model (its own :class:`~serving.holder.ModelHolder`:
onnxruntime session, registry polling and hot swap), writes ``ready VERSION`` on the channel, and
serves ``WorkerConfig.stack`` (default the event loop, :mod:`serving.http_loop`) on the shared socket
until SIGTERM/SIGINT (it finishes the requests it holds) or until the channel reaches end-of-file
(the supervisor is gone: no worker outlives it). Exit codes: 0 stopped,
2 the first model could not be loaded (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aptrank.serving.http_head import IDLE_TIMEOUT_S

LOAD_FAILED = 2
READY = b"ready"
"""The first word a worker writes on its channel once its model is loaded (then the version)."""


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs to build its scorer; travels as JSON on the command line."""

    model: str
    features: str | None = None
    tracking_uri: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    poll_seconds: float = 30.0
    max_candidates: int = 1000
    max_body_bytes: int = 1 << 20
    metrics_interval: float = 1.0
    stack: str = "loop"
    idle_timeout: float = IDLE_TIMEOUT_S

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def command(config: WorkerConfig, listen_fd: int, channel_fd: int, metrics_dir: Path) -> list[str]:
    """The command line of one worker (the fds must be passed with ``pass_fds``)."""
    return [
        sys.executable,
        "-m",
        "aptrank.serving.worker",
        f"--listen-fd={listen_fd}",
        f"--channel-fd={channel_fd}",
        f"--metrics-dir={metrics_dir}",
        f"--config={config.to_json()}",
    ]


def _watch_supervisor(channel: socket.socket) -> None:
    """Block on the channel; end-of-file (or an error) means the supervisor is gone: stop."""
    try:
        while channel.recv(64):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(config: WorkerConfig, sock: socket.socket, channel: socket.socket, metrics_dir: Path) -> int:
    """Load the model, report ready on ``channel``, serve on ``sock`` until stopped; the exit code."""
    from aptrank.serving.errors import ServingError
    from aptrank.serving.holder import ModelHolder
    from aptrank.serving.metrics_shared import SharedMetrics
    from aptrank.serving.model_source import ModelSource
    from aptrank.serving.server import freeze_startup_heap, make_server
    from aptrank.serving.service import Limits, RankService

    metrics = SharedMetrics(metrics_dir, config.metrics_interval)
    holder = ModelHolder(
        ModelSource(config.model, config.tracking_uri),
        features_dir=config.features,
        weights=config.weights,
        threads=config.threads,
        metrics=metrics,
    )
    try:
        holder.refresh()
    except (ServingError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        holder.close()
        return LOAD_FAILED
    service = RankService(holder, Limits(config.max_candidates, config.max_body_bytes))
    server = make_server(service, stack=config.stack, sock=sock, idle_timeout=config.idle_timeout)
    freeze_startup_heap()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: server.request_stop())
    holder.start(config.poll_seconds)
    metrics.start()
    threading.Thread(target=_watch_supervisor, args=(channel,), name="aptrank-supervisor-watch", daemon=True).start()
    channel.sendall(READY + f" {holder.scorer.version if holder.scorer else ''}\n".encode())
    try:
        server.serve_forever()
    finally:
        server.stop()  # drains requests in flight
        service.close()
        holder.close()
        metrics.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--metrics-dir", type=Path, required=True)
    parser.add_argument("--config", required=True, help="WorkerConfig as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker {os.getpid()}: %(message)s")
    sock = socket.socket(fileno=args.listen_fd)
    channel = socket.socket(fileno=args.channel_fd)
    return run_worker(WorkerConfig(**json.loads(args.config)), sock, channel, args.metrics_dir)


if __name__ == "__main__":
    sys.exit(main())
