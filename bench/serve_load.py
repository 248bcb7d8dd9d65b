"""Load benchmark of the online scorer (``aptrank serve``): loopback only, a bounded request count.

Setup (shared with ``bench/score.py``): the real ETL on the shipped KuaiRand sample and a model of
the demo job's architecture (``configs/demo.yaml``: MMoE, 16-dim embeddings, 4 experts of [64])
exported through the parity gate. Weights are untrained: scoring cost does not depend on their values.

The server is ``aptrank serve``'s pre-fork mode (:class:`serving.prefork.PreforkServer`): a supervisor
binds a loopback port and ``--workers`` processes (default: the cores) serve on it, each with its own
model (onnxruntime threads: cores / workers). The client runs in this process (its own GIL) and keeps
one HTTP/1.1 connection per client thread (closed loop: each thread sends its next request when the
previous answer arrived) over a plain socket (``bench/loopback_client.py``: the client shares the
2 cores with the server, so it does not parse more than status, length and body). Every request
ranks 100 candidates (known users and items, seeded random choice, time within the last day before
the snapshot cutoff, a random ``tab``). Latency is measured per request, from send to the whole body.

1. stacks and workers: the same load (``--compare-requests`` at concurrency 8) against each stack
   that runs pre-forked (``loop``: one event loop per process, the default; ``stdlib``: a thread per
   connection) with ``--workers`` processes, and against one ``--stack`` process; this is the
   measurement that chose the default stack. (FastAPI on uvicorn runs in one process only and was
   slower than the stdlib stack there, see ``serving/server.py``.)
2. ``--workers`` at concurrency 1, 8 and 32 (``--requests``, 10,000 by default, per level).

Targets: p99 <= 15 ms at concurrency 8 and 0 errors. The 1-minute load average before each run is
recorded (the cores may be shared), and the CPU time per request of the server (all workers) and of
the client. Writes ``bench/results/serve_load.json``.

    .venv/bin/python bench/serve_load.py [--requests 10000] [--compare-requests 2000] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopback_client import LoopbackClient, request_bytes  # noqa: E402  (bench/ is sys.path[0] as a script)
from report import write_result  # noqa: E402
from score import DEMO_CONFIG, prepare  # noqa: E402  (bench/score.py: ETL + exported demo-size model)

from aptrank.serving.prefork import PreforkServer, default_workers  # noqa: E402
from aptrank.serving.server import DEFAULT_STACK, PREFORK_STACKS  # noqa: E402
from aptrank.serving.worker import WorkerConfig  # noqa: E402

CANDIDATES = 100
RESULT_KEY = b'"item_id":'
"""Counted in a response body: one per ranked candidate (the client does not decode the JSON)."""
WEIGHTS = {"click": 1.0, "like": 2.0, "finish": 1.0}
P99_TARGET_MS = 15.0
READY_TIMEOUT_S = 120.0


def request_bodies(features: Path, n: int, seed: int) -> list[bytes]:
    """``n`` JSON bodies of :data:`CANDIDATES` known items each for known users (seeded)."""
    import polars as pl

    from aptrank.data.spec import FeatureSpec

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


def start_server(model: Path, features: Path, workers: int, stack: str) -> PreforkServer:
    """``workers`` processes of ``stack`` serving ``model`` on a free loopback port (returns once all
    are ready)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    config = WorkerConfig(str(model), str(features), weights=WEIGHTS, threads=threads, poll_seconds=0, stack=stack)
    return PreforkServer(config, workers, "127.0.0.1", 0).start(timeout=READY_TIMEOUT_S)


def server_cpu_s(server: PreforkServer) -> float:
    """User + system CPU seconds of the workers so far (the supervisor is a sleeping thread of this
    process, counted with the client)."""
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in server.pids)


def run_load(port: int, bodies: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` workers, ``requests`` requests in all. A request counts as an
    error unless it answers 200 with :data:`CANDIDATES` results."""
    latencies = np.zeros(requests)
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    wire = [request_bytes("POST", "/v1/rank", b) for b in bodies]

    def worker() -> None:
        client = LoopbackClient(port)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                status, payload = client.send(wire[i % len(wire)])
                if status != 200 or payload.count(RESULT_KEY) != CANDIDATES:
                    errors.append(f"HTTP {status}: {payload[:200]!r}")
            except (OSError, ValueError) as e:
                errors.append(repr(e))
            latencies[i] = time.perf_counter() - t0
        client.close()

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
        "concurrency": concurrency,
        "requests": requests,
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "requests_per_s": requests / wall,
        "candidates_per_s": requests * CANDIDATES / wall,
        "wall_s": wall,
        "client_cpu_ms_per_request": client_cpu * 1000 / requests,
        "load_avg_1m_before": load,
    }


def measure(
    model: Path, features: Path, workers: int, stack: str, bodies: list[bytes], levels: list[tuple[int, int]]
) -> list[dict]:
    server = start_server(model, features, workers, stack)
    try:
        run_load(server.port, bodies, 8, 1000)  # warm-up
        out = []
        for concurrency, requests in levels:
            cpu0 = server_cpu_s(server)
            r = run_load(server.port, bodies, concurrency, requests)
            r["workers"], r["stack"] = workers, stack
            r["server_cpu_ms_per_request"] = (server_cpu_s(server) - cpu0) * 1000 / requests
            print(
                f"{stack:<6s} workers={workers} c={concurrency:<3d} n={requests:<6d} p50 {r['p50_ms']:6.2f} ms"
                f"  p90 {r['p90_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms"
                f"  {r['requests_per_s']:7.1f} req/s  cpu/req server {r['server_cpu_ms_per_request']:.2f} ms"
                f" client {r['client_cpu_ms_per_request']:.2f} ms"
                f"  errors {r['errors']}  load {r['load_avg_1m_before']:.2f}",
                flush=True,
            )
            out.append(r)
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests per concurrency level")
    parser.add_argument("--compare-requests", type=int, default=2_000, help="requests per setup in the comparison")
    parser.add_argument("--stack", choices=PREFORK_STACKS, default=DEFAULT_STACK, help="stack of the levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="job config of the model")
    parser.add_argument("--model", type=Path, help="reuse this exported model (with --features) instead of the setup")
    parser.add_argument("--features", type=Path, help="the ETL output --model was trained on")
    parser.add_argument("--workers", type=int, default=default_workers(), help="server processes (default: cores)")
    parser.add_argument("--no-compare", action="store_true", help="skip the stack and worker comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-serve-") as tmp:
        model, features = (
            (args.model, args.features) if args.model and args.features else prepare(Path(tmp), args.config)
        )
        bodies = request_bodies(features, 2_000, args.seed)
        compare = {}
        if not args.no_compare:
            setups = [(s, args.workers) for s in PREFORK_STACKS] + [(args.stack, 1)] * (args.workers > 1)
            for stack, n in setups:
                compare[f"{stack}/{n}"] = measure(model, features, n, stack, bodies, [(8, args.compare_requests)])[0]
            ours, base = compare[f"{args.stack}/{args.workers}"], compare[f"stdlib/{args.workers}"]
            ratio = base["server_cpu_ms_per_request"] / ours["server_cpu_ms_per_request"]
            print(
                "at concurrency 8 (stack/workers): "
                + ", ".join(
                    f"{k}: p99 {r['p99_ms']:.2f} ms, cpu/req {r['server_cpu_ms_per_request']:.2f} ms"
                    for k, r in compare.items()
                )
                + f"; cpu/req stdlib/{args.workers} / {args.stack}/{args.workers}: x{ratio:.2f}"
            )
        levels = measure(
            model,
            features,
            args.workers,
            args.stack,
            bodies,
            [(1, args.requests), (8, args.requests), (32, args.requests)],
        )
    at8 = next(r for r in levels if r["concurrency"] == 8)
    result = {
        "benchmark": "serve_load",
        "config": {
            "requests": args.requests,
            "compare_requests": args.compare_requests,
            "workers": args.workers,
            "server": f"aptrank.serving.prefork.PreforkServer (aptrank serve --workers N --stack {args.stack})",
            "stack": args.stack,
            "seed": args.seed,
            "candidates_per_request": CANDIDATES,
            "server_onnx_threads_per_worker": max(1, (os.cpu_count() or 1) // args.workers),
            "client": "bench/loopback_client.py (plain socket, keep-alive)",
            "model": f"{args.config} (untrained weights)",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "stacks_and_workers_comparison_c8": compare,
        "levels": levels,
        "targets": {"p99_ms_at_c8_max": P99_TARGET_MS, "errors": 0},
        "meets_targets": at8["p99_ms"] <= P99_TARGET_MS and all(r["errors"] == 0 for r in levels),
    }
    print(f"target p99 <= {P99_TARGET_MS:.0f} ms at c=8 and 0 errors: {'met' if result['meets_targets'] else 'MISSED'}")
    write_result("serve_load", result)


if __name__ == "__main__":
    main()
