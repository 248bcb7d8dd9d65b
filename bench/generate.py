"""Benchmark of the streaming synthetic log generator (``data.synthetic``).

Runs the generator in a child process at ``--events`` (default 10M) and at a baseline of
``--baseline-events`` (default 1M, same world), measures wall time, CPU time and peak RSS of the
child (psutil polled every 20 ms, cross-checked with ``getrusage(RUSAGE_CHILDREN).ru_maxrss``),
prints events/s and the ratios against the baseline, and writes ``bench/results/generate.json``.
Linear scaling shows as a time ratio near the event ratio (less, since start-up is fixed) and an RSS
ratio near 1 once chunks are full: peak memory follows the largest chunk and the world, and the 1M
baseline's chunks are smaller because its days hold fewer rows. Targets: 10M events in <= 60 s
wall and <= 3 GB peak RSS on 2 cores. The load average before each run is recorded because other
processes may share the cores.

    .venv/bin/python bench/generate.py [--events 10000000] [--baseline-events 1000000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import run_child, write_result  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from aptrank.data.synthetic import GeneratorConfig, generate  # noqa: E402
from aptrank.data.synthetic.generator import STREAM_PLAN, stream_rng  # noqa: E402
from aptrank.data.synthetic.plan import make_plan  # noqa: E402

WALL_LIMIT_S = 60.0
RSS_LIMIT_BYTES = 3 * 1024**3


def _config(args: argparse.Namespace, events: int) -> GeneratorConfig:
    return GeneratorConfig(users=args.users, items=args.items, events=events, days=args.days, bad_rows=args.bad_rows)


def _largest_chunk(cfg: GeneratorConfig) -> int:
    """Rows of the largest chunk: with the world, what peak memory depends on."""
    return max(c.rows for c in make_plan(cfg, stream_rng(cfg.seed, STREAM_PLAN)))


def measure(args: argparse.Namespace, events: int) -> dict[str, float]:
    """Run one generation in a child process; wall, CPU and peak RSS of that process."""
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-gen-") as tmp:
        cmd = [sys.executable, __file__, "--child", tmp, "--events", str(events)]
        cmd += ["--users", str(args.users), "--items", str(args.items), "--days", str(args.days)]
        cmd += ["--bad-rows", str(args.bad_rows)]
        run = run_child(cmd, "generator")
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return {
        "events": events,
        "largest_chunk_rows": _largest_chunk(_config(args, events)),
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        # ru_maxrss is the max over all children so far: the baseline runs first, so this is this run's
        "peak_rss_bytes": max(run.polled_peak_rss_bytes, run.children_maxrss_bytes),
        "events_per_s": events / run.wall_s,
        "disk_bytes": disk,
        "load_avg_1m_before": run.load_avg_1m_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--baseline-events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--bad-rows", type=float, default=0.01)
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        generate(args.child, _config(args, args.events))
        return

    base = measure(args, args.baseline_events)
    big = measure(args, args.events)
    scale = args.events / args.baseline_events
    ratios = {
        "event_ratio": scale,
        "wall_ratio": big["wall_s"] / base["wall_s"],
        "cpu_ratio": big["cpu_s"] / base["cpu_s"],
        "rss_ratio": big["peak_rss_bytes"] / base["peak_rss_bytes"],
        "throughput_ratio": big["events_per_s"] / base["events_per_s"],
    }
    result = {
        "benchmark": "generate",
        "config": {k: v for k, v in vars(args).items() if k != "child"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "baseline": base,
        "run": big,
        "ratios_vs_baseline": ratios,
        "targets": {"wall_s_max": WALL_LIMIT_S, "peak_rss_bytes_max": RSS_LIMIT_BYTES},
        "meets_targets": big["wall_s"] <= WALL_LIMIT_S and big["peak_rss_bytes"] <= RSS_LIMIT_BYTES,
    }
    for name, r in (("baseline", base), ("run", big)):
        print(
            f"{name:8s} {r['events']:>11,} events  wall {r['wall_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  "
            f"{r['events_per_s'] / 1e3:7.0f} k events/s  peak RSS {r['peak_rss_bytes'] / 2**20:6.0f} MiB  "
            f"disk {r['disk_bytes'] / 2**20:6.0f} MiB  largest chunk {r['largest_chunk_rows']:,} rows  "
            f"load {r['load_avg_1m_before']:.2f}"
        )
    print(
        f"x{scale:.0f} events: wall x{ratios['wall_ratio']:.2f}, cpu x{ratios['cpu_ratio']:.2f}, "
        f"peak RSS x{ratios['rss_ratio']:.2f}, throughput x{ratios['throughput_ratio']:.2f}; "
        f"targets (<= {WALL_LIMIT_S:.0f} s, <= 3 GiB): {'met' if result['meets_targets'] else 'MISSED'}"
    )
    write_result("generate", result)


if __name__ == "__main__":
    main()
