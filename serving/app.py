"""The online scorer as an ASGI app (Starlette, https://www.starlette.io/), served by granian's worker
processes (:mod:`serving.runner`).

Routes: ``POST /v1/rank`` (:class:`~serving.service.RankService`), ``/healthz`` (liveness),
``/readyz`` (this worker has a model and every worker the server started is ready:
:func:`readiness`), ``/metrics`` (:mod:`serving.metrics`), ``/openapi.json`` and ``/docs`` (Swagger UI,
its assets served from the ``swagger-ui-py`` package, so the page needs no network).

Starlette rather than FastAPI: the request body is parsed by orjson and validated by pydantic in the
service (NaN/Infinity refused, 413 before validation), so FastAPI's body handling would go unused;
its cost per request is measured in ``bench/serve_load.py`` (Starlette ~40 us, FastAPI ~210-320 us
per in-process call). Scoring runs on the event loop: it is CPU under the GIL, and handing it to a
thread pool (where concurrent requests could be batched into one call) measured worse, 2 granian
workers at concurrency 8, 4 interleaved rounds of 1,000 requests: p50 5.30 -> 11.88 ms, 1,190 -> 614
requests/s, server CPU 1.20 -> 1.82 ms per request (load average ~19 on the 2 shared cores).

The body is read as a stream and refused with 413 as soon as it exceeds ``max_body_bytes``
(``Content-Length`` or chunked), so an oversize body never sits in memory, and with 408 when it has
not all arrived ``body_timeout_s`` after the handler began reading it (a client that sends its head
at once and then the body a byte a second); both close the connection. A request carrying both
``Content-Length`` and ``Transfer-Encoding`` never reaches the app as such: hyper reads it by
``Transfer-Encoding`` alone and closes the connection after answering (RFC 9112 section 6.3), so
bytes smuggled after it are never read as a request.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import swagger_ui
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aptrank.serving.api import openapi_document
from aptrank.serving.holder import ModelHolder
from aptrank.serving.metrics import CONTENT_TYPE, forget_dead_workers
from aptrank.serving.model_source import ModelSource
from aptrank.serving.service import TEXT, Limits, RankService, Reply
from aptrank.serving.settings import ServeSettings

TITLE = "aptrank online scorer"
RANK_PATH = "/v1/rank"
SWAGGER_ASSETS = Path(swagger_ui.__file__).parent / "static"


def _reply(reply: Reply) -> Response:
    return Response(reply.body, reply.status, media_type=reply.content_type)


def readiness(holder: ModelHolder, workers: int) -> Reply:
    """200 when this worker serves a model and ``workers`` workers are ready (live ones with a model,
    counted from the shared ``aptrank_ready`` gauge); 503 naming what is missing otherwise, e.g. while a
    killed worker is being replaced: the instance then has less capacity than it was started with."""
    scorer = holder.scorer
    if scorer is None:
        return Reply(503, TEXT, b"no model loaded\n")
    forget_dead_workers()
    ready = int(holder.metrics.value("ready")) if holder.metrics.multiprocess else 1
    if ready < workers:
        return Reply(503, TEXT, f"{ready} of {workers} workers ready\n".encode())
    return Reply(200, TEXT, f"ready {scorer.version} ({ready} of {workers} workers)\n".encode())


def create_app(service: RankService, workers: int = 1) -> Starlette:
    """The ASGI app around ``service`` (whose holder is loaded and polled by its owner)."""
    metrics = service.metrics
    document = openapi_document(TITLE, "1")
    docs = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )

    def counted(route: str, response: Response) -> Response:
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    async def read_body(request: Request) -> tuple[bytes, Reply | None]:
        """The body, or the refusal that stopped reading it: 413 as soon as it is too large, 408
        when it has not all arrived ``body_timeout_s`` after reading began (a client trickling it
        would hold the connection's slot for as long as it likes: granian bounds the head only)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and (too_large := service.too_large(int(declared))) is not None:
            return b"", too_large
        body = bytearray()
        try:
            async with asyncio.timeout(service.limits.body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if (too_large := service.too_large(len(body))) is not None:
                        return b"", too_large
        except TimeoutError:
            return b"", service.too_slow(len(body))
        return bytes(body), None

    async def rank(request: Request) -> Response:
        body, refused = await read_body(request)
        response = _reply(refused or service.rank(body))
        if refused is not None:  # the rest of the body is not read: do not reuse the connection
            response.headers["connection"] = "close"
        return counted(RANK_PATH, response)

    async def healthz(request: Request) -> Response:
        return counted("/healthz", Response(b"ok\n", media_type=TEXT))

    async def readyz(request: Request) -> Response:
        return counted("/readyz", _reply(readiness(service.holder, workers)))

    async def metrics_page(request: Request) -> Response:
        return counted("/metrics", Response(metrics.render(), media_type=CONTENT_TYPE))

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs_page(request: Request) -> Response:
        return docs

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405 (with its ``Allow`` header) as JSON ``{"detail": ...}`` like every error."""
        assert isinstance(exc, HTTPException)
        return counted("other", JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers))

    routes = [
        Route(RANK_PATH, rank, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Mount("/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="swagger-ui"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def build_service(settings: ServeSettings) -> RankService:
    """Load the first model (raises :class:`~serving.errors.ServingError` when it cannot be) and wrap it."""
    holder = ModelHolder(
        ModelSource(settings.model, settings.tracking_uri, settings.allow_unverified_model),
        features_dir=settings.features,
        weights=settings.weights,
        threads=settings.threads,
    )
    try:
        holder.refresh()
    except BaseException:
        holder.close()
        raise
    return RankService(holder, Limits(settings.max_candidates, settings.max_body_bytes, settings.body_timeout_s))


def freeze_startup_heap() -> None:
    """Move every object alive now (imported modules, the loaded model and snapshot tables) out of
    the garbage collector's reach (``gc.freeze``): a full collection then scans only what requests
    allocate. Measured on the demo model: a full collection over the startup heap took ~66 ms, a
    pause that lands on whichever request triggers it (the p99 of ``bench/serve_load.py``)."""
    gc.collect()
    gc.freeze()


def app_from_env() -> Starlette:
    """The worker's app factory (granian ``--factory``): settings from the environment
    (:class:`~serving.settings.ServeSettings`), model loaded now, polled from the app's lifespan."""
    settings = ServeSettings.from_env()
    service = build_service(settings)
    app = create_app(service, settings.workers)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        freeze_startup_heap()
        service.holder.start(settings.poll_seconds)
        try:
            yield
        finally:
            service.close()
            service.holder.close()
            from prometheus_client import multiprocess

            if service.metrics.multiprocess:
                multiprocess.mark_process_dead(os.getpid())

    app.router.lifespan_context = lifespan
    return app
