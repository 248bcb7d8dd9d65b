"""``aptrank serve``: the online scorer over HTTP (``POST /v1/rank``, ``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, ``/docs``) on granian with ``--workers`` processes
(:mod:`serving.runner`), binding 127.0.0.1 unless ``--host`` says otherwise (in a container:
``--host 0.0.0.0``).

The model URI is polled every ``--poll-seconds`` by each worker; a new version (e.g. the ``champion``
alias moved) is loaded beside the old one and swapped in without failing requests in flight. Workers
poll independently, so they may switch up to one poll apart (each answer names its ``model_version``).

A model whose SHA-256 is missing (no ``.sha256`` sidecar, no registry tag) or does not match is
refused at start (exit 2); ``--allow-unverified-model`` loads one without a digest, with a warning.

Exit codes: 0 stopped (Ctrl-C / SIGTERM, graceful); 2 bad input (an option, the model file or
registry URI not found or not loadable, a model without its SHA-256); 1 failure (port in use,
tracking server unreachable). A worker that dies is respawned with backoff, never given up
(:mod:`serving.supervisor`). Errors are one line on stderr.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from aptrank.pipeline.commands.options import AllowUnverifiedModel
from aptrank.pipeline.scoring import fusion_weights

INPUT_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1


def serve_command(
    model: Annotated[str, typer.Option(help="ONNX file or models:/NAME@ALIAS (e.g. @champion)")],
    host: Annotated[str, typer.Option(help="address to bind (loopback by default; 0.0.0.0 in a container)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port (0: any free port)", min=0, max=65535)] = 8080,
    features: Annotated[Path | None, typer.Option(help="ETL output (default: the model run's features/)")] = None,
    config: Annotated[Path | None, typer.Option(help="job config YAML whose scoring.weights fuse the tasks")] = None,
    weight: Annotated[list[str] | None, typer.Option(help="TASK=W fusion weight (repeatable)")] = None,
    poll_seconds: Annotated[float, typer.Option(help="how often to check the model URI (0: never)", min=0)] = 30.0,
    max_candidates: Annotated[int, typer.Option(help="candidates per request above which 413", min=1)] = 1000,
    max_body_bytes: Annotated[int, typer.Option(help="request body size above which 413", min=1)] = 1 << 20,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads per call", min=1)] = 1,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: the CPU cores)", min=1)] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")] = None,
    header_timeout: Annotated[
        float,
        typer.Option(help="seconds for a request head to arrive; idle keep-alive connections close after it", min=0.1),
    ] = 5.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="seconds for a request body to arrive once its head has (408 and the connection closed)", min=0.1
        ),
    ] = 5.0,
    max_connections: Annotated[
        int, typer.Option(help="open connections per worker (more wait in the accept queue)", min=1)
    ] = 1024,
    shared_listener: Annotated[
        bool,
        typer.Option(
            help="one listening socket shared by the workers: no connection refused or reset while a worker"
            " dies, but keep-alive connections spread unevenly (default: one per worker)"
        ),
    ] = False,
    allow_unverified_model: AllowUnverifiedModel = False,
) -> None:
    """Serve ranking requests for the model behind --model."""
    from aptrank.serving.runner import ConnectionLimits, StartupError, default_workers, serve
    from aptrank.serving.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(
        model=model,
        features=str(features) if features else None,
        tracking_uri=tracking_uri,
        weights=fusion_weights(config, weight),
        threads=threads,
        poll_seconds=poll_seconds,
        max_candidates=max_candidates,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout,
        workers=workers or default_workers(),
        allow_unverified_model=allow_unverified_model,
    )
    limits = ConnectionLimits(
        header_timeout_s=header_timeout, max_connections=max_connections, shared_listener=shared_listener
    )
    try:
        serve(settings, host, port, limits, announce=lambda line: typer.echo(line, err=True))
    except StartupError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``aptrank`` app."""
    app.command("serve")(serve_command)
