"""Servers and load generators of ``bench/serve_load.py``: a server as a child process on a free loopback
port (:class:`ServerProcess`: ``aptrank serve`` of a checkout, or the same ASGI app under ``uvicorn
--workers``), its CPU time, and a wrk run (https://github.com/wg/wrk) with its figures parsed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"click": 1.0, "like": 2.0, "finish": 1.0}
READY_TIMEOUT_S = 120.0


class ServerProcess:
    """A server as a child process on a free loopback port, ready when ``/readyz`` answers 200:
    ``aptrank serve`` of this checkout (granian) or of ``tree`` (another checkout, e.g. the commit
    before a stack change: the baseline), or this checkout's ASGI app under ``uvicorn --workers`` (the
    alternative the server choice was measured against)."""

    def __init__(self, model: Path, features: Path, workers: int, server: str, tree: Path = ROOT) -> None:
        from aptrank.serving.metrics import MULTIPROC_ENV
        from aptrank.serving.runner import probe_port
        from aptrank.serving.settings import ServeSettings

        self.port = probe_port("127.0.0.1", 0)
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.tmp = tempfile.mkdtemp(prefix="aptrank-bench-server-")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        if server != "uvicorn":
            cmd = [
                sys.executable,
                "-m",
                "aptrank.pipeline.cli",
                "serve",
                "--model",
                str(model),
                "--features",
                str(features),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--poll-seconds",
                "0",
            ] + [a for t, w in WEIGHTS.items() for a in ("--weight", f"{t}={w}")]
        else:  # uvicorn: the same app factory, settings and metrics folder as aptrank serve hands granian
            settings = ServeSettings(
                model=str(model),
                features=str(features),
                weights=WEIGHTS,
                threads=threads,
                poll_seconds=0,
                workers=workers,
            )
            os.makedirs(os.path.join(self.tmp, "prometheus"))
            env.update({**settings.to_env(), MULTIPROC_ENV: os.path.join(self.tmp, "prometheus")})
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "aptrank.serving.app:app_from_env",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
        self.proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{server} did not become ready in {READY_TIMEOUT_S:.0f} s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)] + [self.proc.pid]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def server_cpu_s(server: ServerProcess) -> float:
    """User + system CPU seconds of the server processes so far."""
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in server.pids)


def run_wrk(port: int, body: bytes, concurrency: int, seconds: int) -> dict:
    """wrk (a standard load generator, https://github.com/wg/wrk) posting ``body`` for ``seconds`` s at
    ``concurrency`` connections, 1 thread; its latency distribution and non-2xx count."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{body.decode()}]]\n'
    )
    load = os.getloadavg()[0]
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/rank",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

    reqs = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": int(reqs.group(1)) if reqs else 0,
        "p50_ms": ms("50%"),
        "p90_ms": ms("90%"),
        "p99_ms": ms("99%"),
        "requests_per_s": float(rate.group(1)) if rate else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "load_avg_1m_before": load,
    }
