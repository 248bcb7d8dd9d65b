"""Metrics of a multi-process server (:mod:`serving.prefork`): one file per worker, summed on read.

Each worker counts in its own :class:`SharedMetrics` and writes a JSON snapshot of it to
``<dir>/worker-<pid>.json`` every ``interval`` seconds (atomically: write then rename). ``/metrics``
is answered by whichever worker the connection reached: it writes its own snapshot first, then sums
every file in the folder. So the answer is exact for the answering worker and at most ``interval``
seconds old for the others. When a worker exits, the supervisor renames its file to
``retired-<pid>.json``: its counts stay in the sums (counters never go back, as in
``prometheus_client``'s multiprocess mode), but it no longer counts as a live worker.

Gauges over live workers: ``aptrank_ready`` is 1 when every live worker has a model;
``aptrank_model_info`` names the answering worker's version, and ``aptrank_worker_models`` counts
live workers per version (two versions show while a swap reaches the workers, a poll apart).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

from aptrank.serving.metrics import PREFIX, Metrics, _labels

LIVE, RETIRED = "worker-", "retired-"


def snapshot_path(directory: Path, pid: int, prefix: str = LIVE) -> Path:
    return directory / f"{prefix}{pid}.json"


def retire(directory: Path, pid: int) -> None:
    """Keep a gone worker's counts but stop counting it as live (called by the supervisor)."""
    live = snapshot_path(directory, pid)
    if live.exists():
        os.replace(live, snapshot_path(directory, pid, RETIRED))


class SharedMetrics(Metrics):
    """A worker's :class:`Metrics` that renders the sum over all workers (see module docstring)."""

    def __init__(self, directory: str | Path, interval: float = 1.0) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.path = snapshot_path(self.directory, os.getpid())
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "counters": [[name, list(map(list, k)), v] for name, s in self._counters.items() for k, v in s.items()],
                "buckets": list(self._buckets),
                "sum": self._sum,
                "count": self._count,
                "model_version": self.model_version,
                "ready": self.ready,
            }

    def dump(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.path)

    def start(self) -> SharedMetrics:
        """Dump every ``interval`` seconds in a daemon thread."""

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.dump()

        self.dump()
        self._thread = threading.Thread(target=loop, name="aptrank-metrics-dump", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.dump()

    def render(self) -> str:
        self.dump()
        total, live = Metrics(), []
        for path in sorted(self.directory.glob("*.json")):
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):  # renamed or replaced meanwhile: the next scrape sees it
                continue
            for name, labels, value in snap["counters"]:
                total._counters[name][tuple(map(tuple, labels))] += value
            total._buckets = [a + b for a, b in zip(total._buckets, snap["buckets"], strict=True)]
            total._sum += snap["sum"]
            total._count += snap["count"]
            if path.name.startswith(LIVE):
                live.append(snap)
        total.model_version = self.model_version
        total.ready = bool(live) and all(s["ready"] for s in live)
        name = f"{PREFIX}worker_models"
        lines = [f"# HELP {name} Live worker processes by the model version they serve.", f"# TYPE {name} gauge"]
        counts = Counter(s["model_version"] for s in live if s["ready"])
        lines += [f"{name}{_labels((('version', v),))} {n}" for v, n in sorted(counts.items())]
        return total.render() + "\n".join(lines) + "\n"
