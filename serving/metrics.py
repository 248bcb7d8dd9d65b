"""Prometheus metrics of the online scorer through ``prometheus_client``
(https://prometheus.github.io/client_python/), in its multiprocess mode when the server runs several
worker processes: each worker writes its samples to memory-mapped files under
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (answered by any worker) aggregates all of them
(https://prometheus.github.io/client_python/multiprocess/). Counters sum over workers, dead ones
included (counters never go back); ``model_info`` and ``ready`` count live workers only.

``/metrics`` also carries the default process collector (``process_cpu_seconds_total``, memory, open
files) and the GC collector of the worker that answered the scrape.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
PREFIX = "aptrank"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_PID_FILE = re.compile(r"_(\d+)\.db$")


class Metrics:
    """The scorer's metrics, registered in their own registry (several instances may live in one
    process, e.g. in tests); ``render()`` is the ``/metrics`` text."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests by route and status code.", ["route", "code"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_rank_request_seconds", "Latency of /v1/rank requests.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.candidates = Counter(f"{PREFIX}_candidates", "Candidates scored by /v1/rank.", registry=r)
        self.missing_rows = Counter(
            f"{PREFIX}_missing_snapshot_rows", "Candidates whose entity had no snapshot row.", ["entity"], registry=r
        )
        self.oov = Counter(f"{PREFIX}_oov", "Candidates encoded to the OOV row.", ["feature"], registry=r)
        self.swaps = Counter(f"{PREFIX}_model_swaps", "Model versions swapped in after startup.", registry=r)
        self.swap_failures = Counter(
            f"{PREFIX}_model_swap_failures", "New model versions that failed to load (old one kept).", registry=r
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "Workers serving each model version.",
            ["version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(f"{PREFIX}_ready", "Workers with a model loaded.", registry=r, multiprocess_mode="livesum")
        self._version: str | None = None

    def set_version(self, version: str) -> None:
        """This process now serves ``version`` (and no longer the previous one)."""
        if self._version is not None:
            self.model_info.labels(version=self._version).set(0)
        self.model_info.labels(version=version).set(1)
        self.ready.set(1)
        self._version = version

    def add_counts(self, counter: Counter, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            if value:
                counter.labels(key).inc(value)

    def value(self, name: str, **labels: str) -> float:
        """The current value of sample ``aptrank_<name>`` with ``labels`` (aggregated over workers), 0 if absent."""
        sample = self.exposition_registry().get_sample_value(f"{PREFIX}_{name}", labels)
        return sample or 0.0

    def exposition_registry(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def render(self) -> bytes:
        """The text exposition: the scorer's metrics (all workers) plus process and GC collectors."""
        registry = self.exposition_registry()
        extra = CollectorRegistry()
        ProcessCollector(registry=extra)
        GCCollector(registry=extra)
        return generate_latest(registry) + generate_latest(extra)


def forget_dead_workers() -> None:
    """Drop the live-gauge files of worker processes that no longer exist (a killed worker cannot
    call ``mark_process_dead`` itself); its counters stay, as they must."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    pids = {int(m.group(1)) for f in glob.glob(os.path.join(path, "*.db")) if (m := _PID_FILE.search(f))}
    for pid in pids:
        if not psutil.pid_exists(pid):
            with contextlib.suppress(FileNotFoundError):  # another worker may be removing them too
                multiprocess.mark_process_dead(pid, path)
