"""Shared benchmark plumbing: measure a child process, write the result JSON under bench/results/."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (pretty, trailing newline) and print its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(RESULTS.parents[1])}")
    return path


@dataclass(frozen=True)
class ChildRun:
    """One benchmarked child process: wall and CPU seconds, the RSS peak polled every 20 ms, the
    peak ``ru_maxrss`` over all children so far (bytes), its stdout and the load before it started."""

    wall_s: float
    cpu_s: float
    polled_peak_rss_bytes: int
    children_maxrss_bytes: int
    stdout: str
    load_avg_1m_before: float


def run_child(cmd: list[str], what: str) -> ChildRun:
    """Run ``cmd`` and measure it; exits the benchmark when the child fails. The child's stdout is
    read after it ends, so it must print little (a result line), not a progress stream."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, text=True)
        peak, ps = 0, psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if proc.wait() != 0:
            raise SystemExit(f"{what} child failed with exit code {proc.returncode}")
        out.seek(0)
        stdout = out.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ChildRun(wall, cpu, peak, after.ru_maxrss * 1024, stdout, load)  # ru_maxrss: KiB on Linux
