"""Load benchmark of the online scorer (``aptrank serve``): loopback only, a bounded request count.

Setup (shared with ``bench/score.py``): the real ETL on the shipped KuaiRand sample and a model of
the demo job's architecture (``configs/demo.yaml``: MMoE, 16-dim embeddings, experts [128, 64])
exported through the parity gate. Weights are untrained: scoring cost does not depend on their values.

The server runs in a child process (so client and server do not share a GIL); the client keeps one
HTTP/1.1 connection per worker thread (closed loop: each worker sends its next request when the
previous answer arrived). Every request ranks 100 candidates (known users and items, seeded random
choice, time within the last day before the snapshot cutoff, a random ``tab``).

1. stack choice: the same load (``--compare-requests`` at concurrency 8) against the standard
   library server and FastAPI on uvicorn; p99 decides the default stack;
2. the chosen stack at concurrency 1, 8 and 32 (``--requests``, 10,000 by default, per level).

Targets: p99 <= 15 ms at concurrency 8 and 0 errors. The 1-minute load average before each run is
recorded (the cores may be shared), and the CPU time per request of the server and of the client.
Writes ``bench/results/serve_load.json``.

    .venv/bin/python bench/serve_load.py [--requests 10000] [--compare-requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_result  # noqa: E402  (bench/ is sys.path[0] when run as a script)
from score import prepare  # noqa: E402  (bench/score.py: ETL + exported demo-size model)

CANDIDATES = 100
P99_TARGET_MS = 15.0
READY_TIMEOUT_S = 120.0


def request_bodies(features: Path, n: int, seed: int) -> list[bytes]:
    """``n`` JSON bodies of :data:`CANDIDATES` known items each for known users (seeded)."""
    import polars as pl

    from data.spec import FeatureSpec

    spec = FeatureSpec.read(features)
    users = pl.read_parquet(features / "snapshot" / "users.parquet", columns=["user_id"])["user_id"].to_numpy()
    items = pl.read_parquet(features / "snapshot" / "items.parquet", columns=["item_id"])["item_id"].to_numpy()
    cutoff = pl.Series([spec.extras["snapshot"]["cutoff"]]).str.to_datetime(time_zone="UTC").dt.epoch("ms")[0]
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        body = {
            "user_id": int(rng.choice(users)),
            "item_ids": rng.choice(items, CANDIDATES, replace=False).tolist(),
            "ts": int(cutoff - rng.integers(0, 86_400_000)),
            "context": {"tab": int(rng.integers(0, 6))},
        }
        bodies.append(json.dumps(body).encode())
    return bodies


def start_server(model: Path, features: Path, stack: str) -> tuple[subprocess.Popen, int]:
    """A child process serving ``model`` on a free loopback port; returns (process, port)."""
    cmd = [sys.executable, __file__, "--child-server", str(model), str(features), stack]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = proc.stdout.readline()
    if not line.startswith("port "):
        proc.kill()
        raise SystemExit(f"server child did not start ({line!r})")
    port = int(line.split()[1])
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return proc, port
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server child never became ready")


def child_server(model: str, features: str, stack: str) -> None:
    from serving.holder import ModelHolder
    from serving.model_source import ModelSource
    from serving.server import make_server
    from serving.service import RankService

    holder = ModelHolder(ModelSource(model), features_dir=features, weights={"click": 1.0, "like": 2.0, "finish": 1.0},
                         threads=1)
    holder.refresh()
    server = make_server(RankService(holder), "127.0.0.1", 0, stack)
    print(f"port {server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # terminate() -> the finally below runs
    try:
        server.serve_forever()
    finally:
        holder.close()


def run_load(port: int, bodies: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` workers, ``requests`` requests in all."""
    latencies = np.zeros(requests)
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/rank", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200 or len(json.loads(payload)["results"]) != CANDIDATES:
                    errors.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException, ValueError) as e:
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies[i] = time.perf_counter() - t0
        conn.close()

    load = os.getloadavg()[0]
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ms = latencies * 1000
    return {
        "concurrency": concurrency, "requests": requests, "errors": len(errors), "error_samples": errors[:5],
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
        "requests_per_s": requests / wall, "candidates_per_s": requests * CANDIDATES / wall,
        "wall_s": wall, "client_cpu_ms_per_request": client_cpu * 1000 / requests, "load_avg_1m_before": load,
    }


def measure(model: Path, features: Path, stack: str, bodies: list[bytes], levels: list[tuple[int, int]]) -> list[dict]:
    proc, port = start_server(model, features, stack)
    server = psutil.Process(proc.pid)
    try:
        run_load(port, bodies, 4, 200)  # warm-up
        out = []
        for concurrency, requests in levels:
            cpu0 = sum(server.cpu_times()[:2])
            r = run_load(port, bodies, concurrency, requests)
            r["stack"] = stack
            r["server_cpu_ms_per_request"] = (sum(server.cpu_times()[:2]) - cpu0) * 1000 / requests
            print(f"{stack:8s} c={concurrency:<3d} n={requests:<6d} p50 {r['p50_ms']:6.2f} ms"
                  f"  p90 {r['p90_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms"
                  f"  {r['requests_per_s']:7.1f} req/s  cpu/req server {r['server_cpu_ms_per_request']:.2f} ms"
                  f" client {r['client_cpu_ms_per_request']:.2f} ms"
                  f"  errors {r['errors']}  load {r['load_avg_1m_before']:.2f}",
                  flush=True)
            out.append(r)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests per concurrency level")
    parser.add_argument("--compare-requests", type=int, default=2_000, help="requests per stack in the comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="reuse this exported model (with --features) instead of the setup")
    parser.add_argument("--features", type=Path, help="the ETL output --model was trained on")
    parser.add_argument("--child-server", nargs=3, metavar=("MODEL", "FEATURES", "STACK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_server:
        child_server(*args.child_server)
        return
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-serve-") as tmp:
        model, features = (args.model, args.features) if args.model and args.features else prepare(Path(tmp))
        bodies = request_bodies(features, 2_000, args.seed)
        compare = {s: measure(model, features, s, bodies, [(8, args.compare_requests)])[0]
                   for s in ("stdlib", "fastapi")}
        chosen = min(compare, key=lambda s: compare[s]["p99_ms"])
        print(f"stack choice at concurrency 8: {chosen} (p99 {compare[chosen]['p99_ms']:.2f} ms vs "
              + ", ".join(f"{s} {r['p99_ms']:.2f} ms" for s, r in compare.items() if s != chosen) + ")")
        levels = measure(model, features, chosen, bodies, [(1, args.requests), (8, args.requests), (32, args.requests)])
    at8 = next(r for r in levels if r["concurrency"] == 8)
    result = {
        "benchmark": "serve_load",
        "config": {"requests": args.requests, "compare_requests": args.compare_requests, "seed": args.seed,
                   "candidates_per_request": CANDIDATES, "model": "demo config MMoE (untrained weights)"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "stack_comparison_c8": compare,
        "chosen_stack": chosen,
        "p99_ratio_vs_other_stack": {s: r["p99_ms"] / compare[chosen]["p99_ms"] for s, r in compare.items()},
        "levels": levels,
        "targets": {"p99_ms_at_c8_max": P99_TARGET_MS, "errors": 0},
        "meets_targets": at8["p99_ms"] <= P99_TARGET_MS and all(r["errors"] == 0 for r in levels),
    }
    print(f"target p99 <= {P99_TARGET_MS:.0f} ms at c=8 and 0 errors: {'met' if result['meets_targets'] else 'MISSED'}")
    write_result("serve_load", result)


if __name__ == "__main__":
    main()
