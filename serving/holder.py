"""The served model and its hot swap: poll the model URI (e.g. a registry alias), load a new version
beside the old one, warm it up, then swap one reference.

A request reads ``holder.scorer`` once and keeps that object to the end, so a swap never fails or
mixes an in-flight request: the old ``Scorer`` stays alive until its last request drops it (the
read-copy-update pattern, McKenney & Slingwine 1998). Loading happens on the polling thread, never
on a request thread. A version that fails to load is logged, counted and skipped until the URI
points elsewhere; the old version keeps serving.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from aptrank.serving.errors import ModelLoadError
from aptrank.serving.metrics import Metrics
from aptrank.serving.model_source import ModelSource
from aptrank.serving.scorer import Scorer, load_scorer

log = logging.getLogger("aptrank.serve")
WARMUP_ROWS = 64
KEEP_DOWNLOADS = 2  # current and previous version (in-flight requests may still use the previous one)


class ModelHolder:
    """Loads the model behind ``source`` and keeps it current (see module docstring)."""

    def __init__(
        self,
        source: ModelSource,
        *,
        features_dir: str | Path | None,
        weights: Mapping[str, float] | None = None,
        threads: int = 1,
        metrics: Metrics | None = None,
        work_dir: str | Path | None = None,
    ) -> None:
        self.source = source
        self.features_dir = Path(features_dir) if features_dir is not None else None
        self.weights = dict(weights or {})
        self.threads = threads
        self.metrics = metrics or Metrics()
        self._owns_work_dir = work_dir is None
        self.work_dir: Path | None = Path(work_dir) if work_dir is not None else None  # made on first download
        self.scorer: Scorer | None = None
        self.key: str | None = None
        self.failed_key: str | None = None
        self._downloads: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _download_dir(self) -> Path | None:
        """A fresh folder for one registry download (file sources need none)."""
        if not self.source.is_registry:
            return None
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="aptrank-serve-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="version-", dir=self.work_dir))

    def _load(self, key: str) -> Scorer:
        dest = self._download_dir()
        try:
            fetched = self.source.fetch(dest)
            features = fetched.features_dir or self.features_dir
            if features is None:
                raise ModelLoadError(
                    f"model {fetched.version}: no feature snapshot: pass --features DIR (the ETL "
                    "output) or log it to the model's run under 'features/'"
                )
            old = self.scorer
            scorer = load_scorer(
                fetched.path,
                features,
                weights=self.weights,
                threads=self.threads,
                version=fetched.version,
                features=old.features if old else None,
                allow_unverified=self.source.allow_unverified,
            )
            scorer.score(scorer.features.sample(WARMUP_ROWS))  # first run allocates; do it off the request path
        except BaseException:
            if dest is not None:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        if dest is not None:
            self._downloads.append(dest)
        return scorer

    def refresh(self) -> bool:
        """Check the source once; load and swap when it changed. True when a new version went live."""
        with self._lock:
            key = self.source.poll_key()
            if key == self.key or key == self.failed_key:
                return False
            try:
                scorer = self._load(key)
            except Exception as e:  # whatever broke the new version, the old one keeps serving
                if self.scorer is None:
                    raise
                self.failed_key = key
                self.metrics.swap_failures.inc()
                log.error("model %s could not be loaded, still serving %s: %s", key, self.scorer.version, e)
                return False
            first = self.scorer is None
            self.scorer, self.key, self.failed_key = scorer, key, None
            self.metrics.set_version(scorer.version)
            if not first:
                self.metrics.swaps.inc()
                log.info("now serving model %s", scorer.version)
            self._prune()
            return True

    def _prune(self) -> None:
        while len(self._downloads) > KEEP_DOWNLOADS:
            shutil.rmtree(self._downloads.pop(0), ignore_errors=True)

    def start(self, poll_seconds: float) -> None:
        """Poll every ``poll_seconds`` in a daemon thread (0 disables polling)."""
        if poll_seconds <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                try:
                    self.refresh()
                except Exception as e:  # a registry hiccup must not kill polling
                    log.warning("polling %s failed: %s", self.source.uri, e)

        self._thread = threading.Thread(target=loop, name="aptrank-model-poll", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for d in self._downloads:
            shutil.rmtree(d, ignore_errors=True)
        self._downloads.clear()
        if self._owns_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
