"""Where a scorer's model comes from: a local ONNX file or an MLflow registry URI.

* a file (or a folder holding exactly one ``*.onnx``, e.g. an MLflow model folder): the version is the
  file's sha256; its poll key is (mtime, size) of the file and of its ``.sha256`` sidecar, so
  replacing either is seen cheaply;
* ``models:/NAME@ALIAS`` (e.g. ``@champion``) or ``models:/NAME/VERSION``: the alias is resolved with
  ``MlflowClient.get_model_version_by_alias`` and that pinned version is downloaded from its storage
  URI (``get_model_version_download_uri``), so a swap never mixes two versions.
  When the version's run logged the ETL output under the artifact folder ``features/``
  (:data:`FEATURES_ARTIFACT`), it is downloaded too and scorers use it as their feature snapshot.
  The download is checked against the version's ``aptrank.model_sha256`` tag and refused on a
  mismatch and written beside the download as its ``.sha256`` sidecar
  (:mod:`aptrank.serving.model_integrity`, issue #20); ``load_onnx`` then checks the file against
  its sidecar (a model with none is refused unless ``allow_unverified``) and refuses NaN/Inf weights.

A scorer model (:mod:`serving.pyfunc_model`: ``artifacts/model.onnx``, ``artifacts/features/``,
``artifacts/fusion.json``), registered or a local folder, brings its own snapshot and fusion weights:
the scorer needs nothing but the URI. A ``models:/`` URI needs a tracking URI (``--tracking-uri`` or
``MLFLOW_TRACKING_URI``): without one the error says where it looked and how to point it, instead of
MLflow silently opening a new empty ``./mlflow.db``.

MLflow docs: https://mlflow.org/docs/latest/model-registry/ (aliases, ``models:/`` URIs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aptrank.data.digests import file_digest
from aptrank.serving.errors import ModelLoadError, TrackingUnreachableError
from aptrank.serving.model_integrity import TAG_SHA256, sidecar, verify_digest, write_sidecar

if TYPE_CHECKING:  # MLflow is imported only when a models:/ URI is used
    from mlflow import MlflowClient

REGISTRY_PREFIX = "models:/"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
STORE_HINT_GLOBS = ("mlflow.db", "work/*/mlflow.db")
"""Where a missing tracking URI is looked for, to name candidates in the error (cwd-relative)."""
FEATURES_ARTIFACT = "features"
_REGISTRY = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class FetchedModel:
    """A model ready to load: the local ``.onnx`` path, its version label, and the feature snapshot
    folder that came with it (None when the source has none)."""

    path: Path
    version: str
    run_id: str | None = None
    features_dir: Path | None = None


@dataclass(frozen=True)
class ModelSource:
    """A model URI plus the MLflow tracking/registry URI used for ``models:/`` (None: MLflow's default,
    i.e. ``MLFLOW_TRACKING_URI``)."""

    uri: str
    tracking_uri: str | None = None
    allow_unverified: bool = False
    """Load a model that carries no SHA-256 (no sidecar, no registry tag), with a warning."""

    @property
    def is_registry(self) -> bool:
        return self.uri.startswith(REGISTRY_PREFIX)

    def _registry_parts(self) -> tuple[str, str | None, str | None]:
        m = _REGISTRY.match(self.uri)
        if not m:
            raise ModelLoadError(f"model URI '{self.uri}': expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return m["name"], m["alias"], m["version"]

    def _tracking(self) -> str:
        """The tracking URI for a ``models:/`` URI: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``;
        with neither, :class:`ModelLoadError` saying where it looked and how to point it."""
        uri = self.tracking_uri or os.environ.get(TRACKING_ENV, "").strip()
        if uri:
            return uri
        found = sorted(str(p.resolve()) for pattern in STORE_HINT_GLOBS for p in Path.cwd().glob(pattern))
        hint = (
            "; MLflow stores found here: " + ", ".join(f"sqlite:///{f}" for f in found)
            if found
            else f"; no mlflow.db under {Path.cwd()} or its work/*/"
        )
        raise ModelLoadError(
            f"model URI '{self.uri}': no MLflow tracking URI (looked at --tracking-uri: not given, and "
            f"{TRACKING_ENV}: not set){hint}. Point it at the job's store, e.g. --tracking-uri "
            f"sqlite:///ABS/PATH/work/demo/mlflow.db or {TRACKING_ENV}=sqlite:///ABS/PATH/work/demo/mlflow.db "
            "(aptrank run prints the exact command)"
        )

    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        uri = self._tracking()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _model_file(self) -> Path:
        p = Path(self.uri)
        if p.is_file():
            return p
        found = sorted(p.rglob("*.onnx")) if p.is_dir() else []
        if len(found) != 1:
            what = "does not exist" if not p.exists() else f"holds {len(found)} .onnx files (need exactly 1)"
            raise ModelLoadError(f"model '{p}': {what}")
        return found[0]

    def _registry_version(self) -> tuple[str, str, str | None]:
        """(name, version, run id) the URI points at now."""
        mv = self._model_version()
        return mv.name, str(mv.version), mv.run_id or None

    def _model_version(self):
        """The registry version the URI points at now."""
        from mlflow.exceptions import MlflowException

        name, alias, version = self._registry_parts()
        client = self._client()
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as e:
            tracking = self._tracking()
            if _connection_failed(e):
                raise TrackingUnreachableError(
                    f"model URI '{self.uri}': tracking server {tracking} is unreachable ({type(_root(e)).__name__})"
                ) from e
            raise ModelLoadError(f"model URI '{self.uri}' (tracking {tracking}): {str(e).splitlines()[0]}") from e
        return mv

    def poll_key(self) -> str:
        """A cheap key that changes when the model behind the URI changes (no download)."""
        if self.is_registry:
            name, version, _ = self._registry_version()
            return f"{name}/{version}"
        path = self._model_file()
        keys = [f"{st.st_mtime_ns}:{st.st_size}" for f in (path, sidecar(path)) if (st := _stat(f)) is not None]
        return "/".join(keys)  # the sidecar too: a model replaced before its digest is retried after it

    def fetch(self, dest: Path | None) -> FetchedModel:
        """Download (registry: under ``dest``, required) or locate (file) the model."""
        if not self.is_registry:
            path = self._model_file()
            bundled = _bundled_features(Path(self.uri))
            return FetchedModel(path, f"sha256:{file_digest(path)[:12]}", features_dir=bundled)
        if dest is None:
            raise ValueError(f"model URI '{self.uri}': a download folder is needed for a registry model")
        import mlflow
        from mlflow.exceptions import MlflowException

        mv = self._model_version()
        name, version, run_id = mv.name, str(mv.version), mv.run_id or None
        tracking = self._tracking()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            # The version's own storage URI, resolved with this client: a models:/ URI handed to
            # download_artifacts would be resolved against MLflow's process-wide registry URI instead.
            location = self._client().get_model_version_download_uri(name, version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location,
                    dst_path=str(dest / "model"),
                    tracking_uri=tracking,
                    registry_uri=tracking,
                )
            )
            features = _bundled_features(local)
            if features is None and run_id:
                features = self._download_features(run_id, dest)
        except (MlflowException, OSError) as e:
            raise ModelLoadError(f"model URI '{self.uri}': downloading version {version} failed: {e}") from e
        onnx_files = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
        if len(onnx_files) != 1:
            raise ModelLoadError(
                f"model URI '{self.uri}' version {version}: expected one .onnx file in its "
                f"artifacts, found {[str(f) for f in onnx_files]}"
            )
        if TAG_SHA256 in mv.tags:  # checked here, and kept as the download's sidecar for the loader
            verify_digest(onnx_files[0], mv.tags[TAG_SHA256], f"'{name}' version {version} tag {TAG_SHA256}")
            write_sidecar(onnx_files[0], mv.tags[TAG_SHA256].strip().lower())
        return FetchedModel(onnx_files[0], f"{name}/{version}", run_id, features)

    def _download_features(self, run_id: str, dest: Path) -> Path | None:
        import mlflow

        if not self._client().list_artifacts(run_id, FEATURES_ARTIFACT):
            return None
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=FEATURES_ARTIFACT,
                dst_path=str(dest / "run"),
                tracking_uri=self._tracking(),
                registry_uri=self._tracking(),
            )
        )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _root(error: BaseException) -> BaseException:
    """The innermost cause of ``error``."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return error


def _connection_failed(error: BaseException) -> bool:
    """Whether ``error`` (an MLflow REST failure) comes from not reaching the server at all."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Max retries exceeded" in str(error) or "Failed to establish a new connection" in str(error)


def _bundled_features(model_dir: Path) -> Path | None:
    """The snapshot a scorer model folder bundles (None: not a scorer model folder)."""
    if not model_dir.is_dir():
        return None
    from aptrank.serving.pyfunc_model import bundled_files

    files = bundled_files(model_dir)
    return files.features if files is not None else None
