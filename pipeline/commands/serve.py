"""``aptrank serve``: the online scorer over HTTP (``POST /v1/rank``, ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, ``/docs``), binding 127.0.0.1 unless ``--host`` says otherwise.

The model URI is polled every ``--poll-seconds``; a new version (e.g. the ``champion`` alias moved)
is loaded beside the old one and swapped in without failing requests in flight.

``--workers N`` (default: the CPU cores) runs N processes on one listening socket
(:mod:`serving.prefork`), each with its own model and polling, so a swap may reach the workers up to
one poll apart; ``--workers 1`` serves in this process. ``--stack``: ``loop`` (default; one event
loop per process, lowest p99 in ``bench/serve_load.py``), ``stdlib`` (thread per connection)
or ``fastapi`` (uvicorn, one process only).

Exit codes: 0 stopped (Ctrl-C / SIGTERM); 2 the first model could not be loaded.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aptrank.pipeline.scoring import fusion_weights
from aptrank.serving.http_head import IDLE_TIMEOUT_S

if TYPE_CHECKING:
    from aptrank.serving.worker import WorkerConfig

INPUT_EXIT_CODE = 2


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the server like Ctrl-C (graceful: the finally block releases the model)."""
    raise KeyboardInterrupt


def serve_command(
    model: Annotated[str, typer.Option(help="ONNX file or models:/NAME@ALIAS (e.g. @champion)")],
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = 8080,
    features: Annotated[Path | None, typer.Option(help="ETL output (default: the model run's features/)")] = None,
    config: Annotated[Path | None, typer.Option(help="job config YAML whose scoring.weights fuse the tasks")] = None,
    weight: Annotated[list[str] | None, typer.Option(help="TASK=W fusion weight (repeatable)")] = None,
    poll_seconds: Annotated[float, typer.Option(help="how often to check the model URI (0: never)")] = 30.0,
    max_candidates: Annotated[int, typer.Option(help="candidates per request above which 413 is returned")] = 1000,
    max_body_bytes: Annotated[int, typer.Option(help="request body size above which 413 is returned")] = 1 << 20,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads per call (requests overlap)")] = 1,
    stack: Annotated[
        str, typer.Option(help="HTTP stack: loop (default, lowest p99 measured), stdlib (threads) or fastapi")
    ] = "loop",
    workers: Annotated[
        int | None, typer.Option(help="server processes on one socket (default: the CPU cores; 1: this process)")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="seconds after which a connection that sends nothing is closed", min=0.1)
    ] = IDLE_TIMEOUT_S,
) -> None:
    """Serve ranking requests for the model behind --model."""
    from aptrank.serving.errors import ServingError
    from aptrank.serving.holder import ModelHolder
    from aptrank.serving.model_source import ModelSource
    from aptrank.serving.server import PREFORK_STACKS, STACKS, freeze_startup_heap, make_server
    from aptrank.serving.service import Limits, RankService

    if stack not in STACKS:
        raise typer.BadParameter(f"'{stack}' is not one of {', '.join(STACKS)}", param_hint="--stack")
    if max_candidates < 1 or max_body_bytes < 1:
        raise typer.BadParameter("--max-candidates and --max-body-bytes must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    weights = fusion_weights(config, weight)
    if workers is None:
        from aptrank.serving.prefork import default_workers

        workers = default_workers() if stack in PREFORK_STACKS else 1
    if workers < 1 or (workers > 1 and stack not in PREFORK_STACKS):
        raise typer.BadParameter(f"must be >= 1, and 1 with --stack {stack}", param_hint="--workers")
    if workers > 1:
        from aptrank.serving.worker import WorkerConfig

        _serve_prefork(
            WorkerConfig(
                model,
                str(features) if features else None,
                tracking_uri,
                weights,
                threads,
                poll_seconds,
                max_candidates,
                max_body_bytes,
                stack=stack,
                idle_timeout=idle_timeout,
            ),
            workers,
            host,
            port,
        )
        return
    try:
        holder = ModelHolder(ModelSource(model, tracking_uri), features_dir=features, weights=weights, threads=threads)
        holder.refresh()
    except (ServingError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(INPUT_EXIT_CODE) from None
    service = RankService(holder, Limits(max_candidates, max_body_bytes))
    server = make_server(service, host, port, stack, idle_timeout=idle_timeout)
    freeze_startup_heap()
    holder.start(poll_seconds)
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop gracefully: answer what was received
        signal.signal(signum, lambda _signum, _frame: server.request_stop())
    typer.echo(
        f"serving {holder.scorer.version if holder.scorer else '?'} on http://{server.host}:{server.port} "
        f"({stack}; docs at /docs)",
        err=True,
    )
    try:
        server.serve_forever()
    finally:
        server.stop()
        holder.close()
        service.close()


def _serve_prefork(config: WorkerConfig, workers: int, host: str, port: int) -> None:
    """Serve with ``workers`` processes until Ctrl-C / SIGTERM (see :mod:`serving.prefork`)."""
    from aptrank.serving.prefork import PreforkServer, WorkerStartError

    server = PreforkServer(config, workers, host, port)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
    except WorkerStartError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(INPUT_EXIT_CODE if e.exit_code in (None, INPUT_EXIT_CODE) else 1) from None
    except KeyboardInterrupt:
        return
    versions = ", ".join(sorted(set(server.versions)))
    typer.echo(
        f"serving {versions} on http://{server.host}:{server.port} ({config.stack}, {workers} workers; docs at /docs)",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``aptrank`` app."""
    app.command("serve")(serve_command)
