"""Where MLflow data goes (DESIGN.md contract 7) and how a dead server is reported.

Embedded default: a SQLite store ``sqlite:///<workdir>/mlflow.db`` and artifacts in
``<workdir>/mlartifacts``. ``MLFLOW_TRACKING_URI`` (it wins, as ``pipeline.config.TrackingConfig``
documents) or the config's ``tracking.uri`` point anywhere else, e.g. a real ``mlflow server``.

MLflow's REST client retries a refused connection for minutes before it gives up (7 retries with
exponential backoff and a 120 s timeout per request: 501-515 s for a killed server, issue #20); a
job should not wait that long, so :func:`connect` first asks the server's ``/health`` endpoint with
a short timeout and raises :class:`TrackingError` naming the URI, and bounds every later request:
:func:`bound_requests` sets MLflow's HTTP retry settings (``MLFLOW_HTTP_REQUEST_*``) so that one call
gives up within ``tracking.timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`).
"""

from __future__ import annotations

import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

ENV_URI = "MLFLOW_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
HEALTH_TIMEOUT_S = 5.0
DEFAULT_TIMEOUT_S = 30.0
HTTP_RETRIES = 2  # attempts = 3; urllib3 backoff with factor 1 sleeps about 1 s and 2 s between them
REMOTE_SCHEMES: tuple[str, ...] = ("http://", "https://")
SQLITE_PREFIX = "sqlite:///"


class TrackingError(RuntimeError):
    """An MLflow tracking or registry step failed; the message names the URI and the step."""


def resolve_tracking_uri(config_uri: str | None, workdir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``config_uri``, else SQLite in ``workdir``."""
    env = os.environ.get(ENV_URI, "").strip()
    if env:
        return env
    if config_uri:
        return config_uri
    return f"sqlite:///{Path(workdir).resolve() / DB_FILE}"


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def artifact_location(uri: str, workdir: str | Path) -> str | None:
    """Artifact root for a new experiment: ``<workdir>/mlartifacts`` for a local store; ``None``
    (the server decides, e.g. ``--artifacts-destination``) for a remote one."""
    return None if is_remote(uri) else (Path(workdir).resolve() / ARTIFACT_DIR).as_uri()


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` when ``uri`` is a server that does not answer ``/health``."""
    if not is_remote(uri):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri}: /health answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"MLflow server {uri} is not reachable ({e}); start it, or point tracking.uri / "
            f"{ENV_URI} at a running server"
        ) from e


def bound_requests(timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Make one MLflow REST call give up within about ``timeout_s`` seconds in this process:
    (retries + 1) attempts of ``timeout_s / 4`` s each plus the backoff sleeps (about 3 s)."""
    if not (timeout_s >= 4 and math.isfinite(timeout_s)):
        raise ValueError(f"tracking.timeout_s must be a finite number of seconds >= 4, got {timeout_s}")
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int((timeout_s - 3) / (HTTP_RETRIES + 1))))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(HTTP_RETRIES)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"


def connect(uri: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> MlflowClient:
    """A client for tracking and registry on ``uri``, after checking a server is up; its requests
    give up within ``timeout_s`` (:func:`bound_requests`, remote servers only). A SQLite store is
    opened (and, when new, migrated) under :func:`migration_lock`."""
    check_reachable(uri)
    if is_remote(uri):
        bound_requests(timeout_s)
    if not uri.startswith(SQLITE_PREFIX):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    with migration_lock(uri), mlflow_errors(uri, "open the store"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # the tracking store creates/migrates its schema
        client.search_registered_models(max_results=1)  # and so does the registry store, on first use
    return client


@contextmanager
def migration_lock(uri: str) -> Iterator[None]:
    """Hold ``<database>.migrate.lock`` (``flock(2)``, exclusive) for the block: jobs of different
    configs starting at once on one fresh SQLite database migrate it one at a time instead of
    racing on its schema (issue #20)."""
    import fcntl

    db = Path(uri.removeprefix(SQLITE_PREFIX))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".migrate.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(client: MlflowClient, name: str, location: str | None) -> str:
    """Id of experiment ``name``, created (with ``location`` as artifact root) when missing."""
    with mlflow_errors(client.tracking_uri, f"open experiment '{name}'"):
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                return client.create_experiment(name, artifact_location=location)
            except MlflowException as e:  # another job created it between the two calls
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise e
    if exp.lifecycle_stage != "active":
        raise TrackingError(
            f"{client.tracking_uri}: experiment '{name}' is deleted; restore it or set "
            "tracking.experiment to another name"
        )
    return exp.experiment_id


@contextmanager
def mlflow_errors(uri: str, step: str) -> Iterator[None]:
    """Re-raise MLflow and I/O failures of ``step`` as :class:`TrackingError` naming ``uri``."""
    try:
        yield
    except TrackingError:
        raise
    except (MlflowException, OSError) as e:
        raise TrackingError(f"MLflow {uri}: {step} failed: {e}") from e


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide (fluent) API at ``uri`` for the block, for the few calls that
    have no client form (``mlflow.onnx.log_model``; a SQL registry store resolving ``models:/``).

    ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI`` (for subprocesses); on exit
    the variable is put back as it was (unset when it was unset), so :func:`resolve_tracking_uri`
    keeps reading the user's choice, not ours."""
    previous = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: unset the global and the variable
