"""Prometheus metrics of the online scorer, rendered in the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): counters, one latency histogram
and info/gauge samples, thread-safe behind one lock. No client library: the format is a few lines.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import ClassVar

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
PREFIX = "aptrank_"

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metrics:
    """Counters by (name, labels); ``observe`` feeds the request latency histogram."""

    HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "requests_total": ("counter", "HTTP requests by route and status code."),
        "candidates_total": ("counter", "Candidates scored by /v1/rank."),
        "missing_snapshot_rows_total": ("counter", "Candidates whose entity had no snapshot row (defaults used)."),
        "oov_total": ("counter", "Candidates whose categorical feature was encoded to the OOV row."),
        "model_swaps_total": ("counter", "Model versions swapped in after startup."),
        "model_swap_failures_total": ("counter", "New model versions that failed to load (old one kept)."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0
        self.model_version = ""
        self.ready = False

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if name not in self.HELP:
            raise KeyError(f"metric '{name}' is not declared in Metrics.HELP")
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += value

    def add_counts(self, name: str, label: str, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            if value:
                self.inc(name, value, **{label: key})

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sum += seconds
            self._count += 1

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"]
                series = self._counters.get(name) or {(): 0.0}
                lines += [f"{PREFIX}{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
            h = f"{PREFIX}rank_request_seconds"
            lines += [f"# HELP {h} Latency of /v1/rank requests.", f"# TYPE {h} histogram"]
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'{h}_bucket{{le="{le}"}} {cumulative}')
            lines += [f"{h}_sum {self._sum:.6f}", f"{h}_count {self._count}"]
            lines += [
                f"# HELP {PREFIX}model_info The model version being served.",
                f"# TYPE {PREFIX}model_info gauge",
                f"{PREFIX}model_info{_labels((('version', self.model_version),))} 1",
                f"# HELP {PREFIX}ready 1 when a model is loaded and requests are served.",
                f"# TYPE {PREFIX}ready gauge",
                f"{PREFIX}ready {int(self.ready)}",
            ]
        return "\n".join(lines) + "\n"
