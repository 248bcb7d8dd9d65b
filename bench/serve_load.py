"""Load benchmark of the online scorer (``aptrank serve``): loopback only, bounded request counts.

Setup (shared with ``bench/score.py``): the real ETL on the shipped KuaiRand sample and a model of
the demo job's architecture (``configs/demo.yaml``: MMoE, 16-dim embeddings, 4 experts of [64])
exported through the parity gate. Weights are untrained: scoring cost does not depend on their values.

Servers, each a child process with ``--workers`` (default 2) processes on a free loopback port:

* ``granian``: ``aptrank serve`` of this checkout (the ASGI app of ``serving/app.py`` under granian);
* ``uvicorn``: the same app factory and settings under ``uvicorn --workers`` (the alternative server);
* ``baseline`` (``--baseline-tree DIR``): ``aptrank serve`` of another checkout with its own default
  stack, e.g. the commit before a server change (``git archive COMMIT | tar -x -C DIR``); this is how
  the new stack was compared with the hand-written one it replaced, in the same run.

Our client runs in this process and keeps one HTTP/1.1 connection per client thread (closed loop)
over a plain socket (``bench/loopback_client.py``: it shares the 2 cores with the server, so it does
not parse more than status, length and body). Every request ranks 100 candidates (known users and
items, seeded random choice, time within the last day before the snapshot cutoff, a random ``tab``).
Latency is measured per request, from send to the whole body. ``granian`` runs concurrency 8
(``--requests``, 10,000), 1 and 32 (``--level-requests``), then wrk (a standard load generator: one
thread, 8 connections, ``--wrk-seconds``, one body) so figures compare with others'; ``uvicorn`` and
``baseline`` run concurrency 8. The framework cost per request (Starlette vs FastAPI, in-process ASGI
calls) is printed first.

Targets: the new stack's p99 at concurrency 8 <= 10 ms and <= 1.3x the baseline's, 0 errors. The
1-minute load average before each run is recorded (the cores may be shared), and the CPU time per
request of the server (all processes) and of the client. Writes ``bench/results/serve_load.json``.

    .venv/bin/python bench/serve_load.py [--requests 10000] [--baseline-tree DIR] [--workers 2]
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loopback_client import LoopbackClient, request_bytes  # noqa: E402  (bench/ is sys.path[0] as a script)
from report import write_result  # noqa: E402
from score import DEMO_CONFIG, prepare  # noqa: E402  (bench/score.py: ETL + exported demo-size model)
from serve_servers import ServerProcess, run_wrk, server_cpu_s  # noqa: E402

CANDIDATES = 100
RESULT_KEY = b'"item_id":'
"""Counted in a response body: one per ranked candidate (the client does not decode the JSON)."""
P99_TARGET_MS = 10.0
RATIO_TARGET = 1.3


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


def framework_overhead(calls: int = 3000) -> dict[str, float]:
    """Microseconds per in-process ASGI call of one trivial ``POST`` route (raw body in, bytes out) on
    Starlette and on FastAPI (``Request`` parameter): what the framework adds to every request."""
    import asyncio

    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    fast = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    fast.post("/v1/rank")(endpoint)
    apps = {"starlette": Starlette(routes=[Route("/v1/rank", endpoint, methods=["POST"])]), "fastapi": fast}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/rank",
        "raw_path": b"/v1/rank",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def call(app) -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict) -> None:
            pass

        await app(dict(scope), receive, send)

    async def timed(app) -> float:
        for _ in range(200):
            await call(app)
        t0 = time.perf_counter()
        for _ in range(calls):
            await call(app)
        return (time.perf_counter() - t0) / calls * 1e6

    return {name: asyncio.run(timed(app)) for name, app in apps.items()}


@dataclass
class Load:
    """One closed-loop run: per-request latencies (s), error samples, wall and CPU seconds."""

    concurrency: int
    latencies: np.ndarray
    errors: list[str]
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float
    load_avg_1m_before: float


def run_load(server: ServerProcess, bodies: list[bytes], concurrency: int, requests: int) -> Load:
    """Closed-loop load: ``concurrency`` workers, ``requests`` requests in all. A request counts as an
    error unless it answers 200 with :data:`CANDIDATES` results."""
    latencies = np.zeros(requests)
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    wire = [request_bytes("POST", "/v1/rank", b) for b in bodies]

    def worker() -> None:
        client = LoopbackClient(server.port)
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
    t0, cpu0, server0 = time.perf_counter(), time.process_time(), server_cpu_s(server)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Load(concurrency, latencies, errors, wall, client_cpu, server_cpu_s(server) - server0, load)


def summarize(name: str, workers: int, loads: list[Load]) -> dict:
    """Latency percentiles and rates over ``loads`` (one setup, possibly several rounds); printed."""
    ms = np.concatenate([x.latencies for x in loads]) * 1000
    n, wall = len(ms), sum(x.wall_s for x in loads)
    errors = [e for x in loads for e in x.errors]
    r = {
        "stack": name,
        "workers": workers,
        "concurrency": loads[0].concurrency,
        "requests": n,
        "rounds": len(loads),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "requests_per_s": n / wall,
        "server_cpu_ms_per_request": sum(x.server_cpu_s for x in loads) * 1000 / n,
        "client_cpu_ms_per_request": sum(x.client_cpu_s for x in loads) * 1000 / n,
        "load_avg_1m_before": [round(x.load_avg_1m_before, 2) for x in loads],
    }
    print(
        f"{name:<8s} workers={workers} c={r['concurrency']:<3d} n={n:<6d} p50 {r['p50_ms']:6.2f} ms"
        f"  p90 {r['p90_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms"
        f"  {r['requests_per_s']:7.1f} req/s  cpu/req server {r['server_cpu_ms_per_request']:.2f} ms"
        f" client {r['client_cpu_ms_per_request']:.2f} ms  errors {r['errors']}"
        f"  load {'/'.join(f'{v:.1f}' for v in r['load_avg_1m_before'])}",
        flush=True,
    )
    return r


def print_wrk(name: str, workers: int, w: dict) -> None:
    print(
        f"{name:<8s} workers={workers} wrk c={w.get('concurrency', 8)} {w.get('seconds', 0)} s: n={w.get('requests')}"
        f" p50 {w.get('p50_ms', 0):6.2f} ms  p90 {w.get('p90_ms', 0):6.2f} ms"
        f"  p99 {w.get('p99_ms', 0):6.2f} ms  {w.get('requests_per_s', 0):7.1f} req/s"
        f"  non-2xx {w.get('non_2xx')}  socket errors {w.get('socket_errors') or 0}"
        f"  load {w.get('load_avg_1m_before', 0):.2f} {w.get('skipped', '')}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests at concurrency 8 (new and old stack)")
    parser.add_argument("--level-requests", type=int, default=3_000, help="requests at concurrency 1 and 32")
    parser.add_argument("--compare-requests", type=int, default=3_000, help="requests of the uvicorn comparison")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the c=8 comparison")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="wrk run at concurrency 8 (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="job config of the model")
    parser.add_argument("--model", type=Path, help="reuse this exported model (with --features) instead of the setup")
    parser.add_argument("--features", type=Path, help="the ETL output --model was trained on")
    parser.add_argument("--workers", type=int, default=2, help="server processes of every stack")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout whose `aptrank serve` (its default stack) is measured at c=8 beside this one's",
    )
    args = parser.parse_args()
    overhead = framework_overhead()
    print(
        "framework overhead per request (in-process ASGI call): "
        + ", ".join(f"{k} {v:.1f} us" for k, v in overhead.items()),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-serve-") as tmp:
        model, features = (
            (args.model, args.features) if args.model and args.features else prepare(Path(tmp), args.config)
        )
        bodies = request_bodies(features, 2_000, args.seed)
        trees = {"granian": ROOT, "uvicorn": ROOT} | ({"baseline": args.baseline_tree} if args.baseline_tree else {})
        servers: dict[str, ServerProcess] = {}
        try:
            for name, tree in trees.items():  # all started first; an idle server takes no CPU
                servers[name] = ServerProcess(model, features, args.workers, name, tree)
                run_load(servers[name], bodies, 8, 1000)  # warm-up
            # c=8, interleaved rounds: a change in the machine's load hits every server alike
            loads: dict[str, list[Load]] = {name: [] for name in servers}
            per_round = {"uvicorn": args.compare_requests // args.rounds}
            for _ in range(args.rounds):
                for name, server in servers.items():
                    loads[name].append(run_load(server, bodies, 8, per_round.get(name, args.requests // args.rounds)))
            runs = {name: [summarize(name, args.workers, rs)] for name, rs in loads.items()}
            for concurrency in (1, 32):
                load = run_load(servers["granian"], bodies, concurrency, args.level_requests)
                runs["granian"].append(summarize("granian", args.workers, [load]))
            if args.wrk_seconds:
                wrk = run_wrk(servers["granian"].port, bodies[0], 8, args.wrk_seconds)
                print_wrk("granian", args.workers, wrk)
                runs["granian"].append({"stack": "granian", "client": "wrk", **wrk})
        finally:
            for server in servers.values():
                server.stop()
    new8 = runs["granian"][0]
    old8 = runs["baseline"][0] if "baseline" in runs else None
    ratio = new8["p99_ms"] / old8["p99_ms"] if old8 else float("nan")
    ours = [r for rs in runs.values() for r in rs if "errors" in r]
    met = (
        new8["p99_ms"] <= P99_TARGET_MS
        and (old8 is None or ratio <= RATIO_TARGET)
        and all(r["errors"] == 0 for r in ours)
    )
    print(
        f"c=8: new (granian/{args.workers}) p99 {new8['p99_ms']:.2f} ms, "
        + (
            f"baseline ({args.baseline_tree}, {args.workers} workers) p99 {old8['p99_ms']:.2f} ms,"
            f" new/old x{ratio:.2f}; "
            if old8
            else ""
        )
        + f"uvicorn/{args.workers} p99 {runs['uvicorn'][0]['p99_ms']:.2f} ms"
    )
    result = {
        "benchmark": "serve_load",
        "config": {
            "requests_c8": args.requests,
            "rounds_c8": args.rounds,
            "requests_c1_c32": args.level_requests,
            "compare_requests": args.compare_requests,
            "workers": args.workers,
            "server": "aptrank serve (granian, ASGI app serving.app) vs uvicorn --workers vs the old loop stack",
            "seed": args.seed,
            "candidates_per_request": CANDIDATES,
            "server_onnx_threads_per_worker": max(1, (os.cpu_count() or 1) // args.workers),
            "client": "bench/loopback_client.py (plain socket, keep-alive) and wrk (-t1 -c8)",
            "model": f"{args.config} (untrained weights)",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "framework_overhead_us": overhead,
        "runs": runs,
        "new_over_old_p99_c8": ratio,
        "targets": {"p99_ms_at_c8_max": P99_TARGET_MS, "new_over_old_max": RATIO_TARGET, "errors": 0},
        "meets_targets": met,
    }
    print(
        f"target new p99 <= {P99_TARGET_MS:.0f} ms and <= x{RATIO_TARGET} old at c=8, 0 errors: "
        + ("met" if met else "MISSED")
    )
    write_result("serve_load", result)


if __name__ == "__main__":
    main()
