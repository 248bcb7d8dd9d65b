"""Where MLflow data goes (DESIGN.md contract 7) and how a dead server is reported.

Embedded default: a SQLite store ``sqlite:///<workdir>/mlflow.db`` and artifacts in
``<workdir>/mlartifacts``. ``MLFLOW_TRACKING_URI`` (it wins, as ``pipeline.config.TrackingConfig``
documents) or the config's ``tracking.uri`` point anywhere else, e.g. a real ``mlflow server``.

MLflow's REST client retries a refused connection for minutes before it gives up; a job should not
wait that long to learn that nothing is listening, so :func:`connect` first asks the server's
``/health`` endpoint with a short timeout and raises :class:`TrackingError` naming the URI.
"""

from __future__ import annotations

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
REMOTE_SCHEMES: tuple[str, ...] = ("http://", "https://")


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


def connect(uri: str) -> MlflowClient:
    """A client for tracking and registry on ``uri``, after checking a server is up."""
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
