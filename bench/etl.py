"""Benchmark of ``aptrank etl`` (Polars) against the same feature set in idiomatic pandas.

Generates canonical logs with ``data.synthetic`` (``--events``, default 10M, and
``--baseline-events``, default 1M, same world), then runs, each in its own child process after an
``os.sync()`` (wall and CPU time from ``getrusage``, peak RSS from psutil polled every 20 ms and the
child's own ``ru_maxrss``):

1. the Polars ETL (``data.etl.run_etl``, ``configs/etl/synthetic.yaml``) on the large log,
   ``--repeats`` times (default 3; the median run counts, the largest peak RSS, and every run must
   give the same content hash: the shared 2 cores and the VM's disk writeback make one run vary by
   up to 10%);
2. the Polars ETL on the baseline log;
3. the pandas baseline (``bench/etl_pandas_baseline.py``) on the baseline log;

checks that (2) and (3) wrote the same examples (every column; dense within 1e-4), prints events/s
and the per-event time ratio pandas / Polars, and writes ``bench/results/etl.json``. Targets: the
Polars ETL at >= 300k events/s end to end with <= 4 GB peak RSS on 2 cores, and pandas >= 5x slower
per event. The load average is recorded because other processes may share the cores.

Issue #17 adds (``daily`` and ``spark`` in the result; ``--skip-core`` runs only these and keeps the
file's other entries):

4. daily: a ``--daily-events`` (10M), 7-day log with fixed split dates; the full recompute over all 7
   days, the bootstrap through day 6 and the incremental run of day 7 (:mod:`data.etl.daily`), and
   the ratio of the day's time to one day's share (1/7) of the full recompute (target <= 1.5), in
   wall time and in CPU time (the steadier one when other jobs share the cores); the full recompute
   and the day run ``--repeats`` times each and their median runs count (one run of either moved
   by up to 20% on the shared VM);
5. spark: the embedded (Polars) and the Spark engine (local[2]) on a ``--spark-events`` (1M) log,
   the ratio of their times and whether the content hashes agree.

    .venv/bin/python bench/etl.py [--events 10000000] [--baseline-events 1000000] [--repeats 3]
                                  [--daily-events 10000000] [--spark-events 1000000] [--skip-core]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import run_child, write_result  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from aptrank.data.etl.bootstrap import bootstrap  # noqa: E402
from aptrank.data.etl.config import EtlConfig, load_config  # noqa: E402
from aptrank.data.etl.daily import run_day  # noqa: E402
from aptrank.data.etl.run import example_files, run_etl  # noqa: E402
from aptrank.data.synthetic import GeneratorConfig, generate  # noqa: E402

CONFIG = ROOT / "configs" / "etl" / "synthetic.yaml"
MIN_EVENTS_PER_S = 300_000
MAX_RSS_BYTES = 4 * 10**9
MIN_PANDAS_SLOWDOWN = 5.0


DAILY_DAYS = 7
MAX_DAY_SHARE_RATIO = 1.5


def _daily_cfg() -> EtlConfig:
    """The synthetic config with split dates (the last 2 of 7 days valid and test): daily runs need them."""
    cfg, start = load_config(CONFIG), dt.date.fromisoformat(GeneratorConfig.default("start"))
    dates = [str(start + dt.timedelta(days=d)) for d in (DAILY_DAYS - 2, DAILY_DAYS - 1)]
    return cfg.model_copy(
        update={"splits": cfg.splits.model_copy(update={"valid_start": dates[0], "test_start": dates[1]})}
    )


def _child(engine: str, src: str, out: str) -> None:
    cfg = load_config(CONFIG)
    last = dt.date.fromisoformat(GeneratorConfig.default("start")) + dt.timedelta(days=DAILY_DAYS - 1)
    if engine in ("polars", "spark", "daily-full", "daily-boot", "daily-day"):
        if engine == "daily-full":
            summary = run_etl("canonical", src, out, _daily_cfg()).summary
        elif engine == "daily-boot":
            summary = bootstrap("canonical", src, out, _daily_cfg(), last - dt.timedelta(days=1), print_nothing).summary
        elif engine == "daily-day":
            summary = run_day("canonical", src, out, _daily_cfg(), last, print_nothing).summary
        else:
            summary = run_etl("canonical", src, out, cfg, engine=engine).summary
        info = {
            "input_rows": summary["input_rows"],
            "accepted_rows": summary["accepted_rows"],
            "stage_seconds": summary["stage_seconds"],
            "stage_cpu_seconds": summary["stage_cpu_seconds"],
            "content_hash": summary["content_hash"],
        }
    else:  # imported here: pandas is no part of the other children's work (0.15 s of their time)
        from bench.etl_pandas_baseline import run_pandas_etl

        info = run_pandas_etl(Path(src), Path(out), cfg)
    info["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(info), flush=True)


def measure(engine: str, src: Path, out: Path) -> dict[str, Any]:
    """Run one ETL in a child process; wall, CPU, peak RSS and what the child reports. Dirty pages
    left by the setup (the generated input, an earlier run's outputs) are flushed first: otherwise
    the kernel writes several GB back during the run and its throttling lands on whichever run comes
    next (measured: 41 s before, 37 s after a ``sync`` for the same 10M-event run)."""
    os.sync()
    cmd = [sys.executable, __file__, "--child", engine, str(src), str(out)]
    run = run_child(cmd, engine)
    info = json.loads(next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))[7:])
    events = int(info["input_rows"])
    return {
        "engine": engine,
        "events": events,
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "peak_rss_bytes": max(run.polled_peak_rss_bytes, int(info.pop("ru_maxrss_bytes"))),
        "events_per_s": events / run.wall_s,
        "load_avg_1m_before": run.load_avg_1m_before,
        **info,
    }


def same_examples(a: Path, b: Path) -> dict[str, Any]:
    """Compare the examples of two ETL outputs column by column."""
    worst, mismatched = 0.0, []
    for split in ("train", "valid", "test"):
        x = pl.concat([pl.read_parquet(f) for f in example_files(a, split)])
        y = pl.concat([pl.read_parquet(f) for f in example_files(b, split)])
        if x.height != y.height or set(x.columns) != set(y.columns):
            return {"equal": False, "reason": f"{split}: shapes {x.shape} vs {y.shape}"}
        for c in x.columns:
            if x[c].dtype == pl.Float32:
                diff = float(np.abs(x[c].to_numpy().astype(np.float64) - y[c].to_numpy()).max(initial=0.0))
                worst = max(worst, diff)
                if diff > 1e-4:
                    mismatched.append(f"{split}.{c}")
            elif not x[c].equals(y[c].cast(x[c].dtype)):
                mismatched.append(f"{split}.{c}")
    return {"equal": not mismatched, "mismatched": mismatched, "max_abs_dense_diff": worst}


def print_nothing(_msg: str) -> None:
    pass


def _generate(path: Path, args: argparse.Namespace, events: int) -> None:
    cfg = GeneratorConfig(
        users=args.users, items=args.items, events=events, seed=args.seed, bad_rows=args.bad_rows, days=DAILY_DAYS
    )
    generate(path, cfg, progress=False)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by wall time, with every run's wall time, the largest peak RSS and whether every
    run gave the same content hash."""
    return {
        **sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2],
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "runs_wall_s": [r["wall_s"] for r in runs],
        "runs_cpu_s": [r["cpu_s"] for r in runs],
        "same_content_hash": len({r["content_hash"] for r in runs}) == 1,
    }


def repeated(engine: str, src: Path, out: Path, repeats: int, fresh: bool) -> dict[str, Any]:
    """``repeats`` runs of one child (``fresh``: the output folder removed before each), the median."""
    runs = []
    for i in range(repeats):
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        runs.append(measure(engine, src, out))
        print(f"{engine} run {i + 1}/{repeats}: " + line(runs[-1]), flush=True)
    return median_run(runs)


def daily(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Full recompute vs bootstrap + incremental last day, on the same 7-day log (see the docstring);
    the full recompute and the day ``--repeats`` times each (the day's reruns replace its outputs
    and start from the same state of day 6), the median run of each counts."""
    _generate(root / "daily", args, args.daily_events)
    full = repeated("daily-full", root / "daily", root / "out-daily-full", args.repeats, fresh=True)
    shutil.rmtree(root / "out-daily-full")
    boot = measure("daily-boot", root / "daily", root / "out-daily")
    day = repeated("daily-day", root / "daily", root / "out-daily", args.repeats, fresh=False)
    share, cpu_share = full["wall_s"] / DAILY_DAYS, full["cpu_s"] / DAILY_DAYS
    print(f"daily: median of {args.repeats} runs each (full recompute, day)")
    for r in (full, boot, day):
        print(line(r), flush=True)
    print(
        f"daily: day {DAILY_DAYS} incremental {day['wall_s']:.1f} s vs one day's share of the full recompute "
        f"{share:.1f} s: x{day['wall_s'] / share:.2f} (target <= x{MAX_DAY_SHARE_RATIO}); in CPU time "
        f"{day['cpu_s']:.1f} s vs {cpu_share:.1f} s: x{day['cpu_s'] / cpu_share:.2f} (steadier under load)"
    )
    print(f"daily: day stages wall {day['stage_seconds']}; cpu {day['stage_cpu_seconds']}")
    print(f"daily: full recompute stages cpu {full['stage_cpu_seconds']}")
    return {
        "events": args.daily_events,
        "days": DAILY_DAYS,
        "repeats": args.repeats,
        "full_recompute": full,
        "bootstrap": boot,
        "incremental_day": day,
        "day_share_s": share,
        "day_vs_share": day["wall_s"] / share,
        "day_vs_share_cpu": day["cpu_s"] / cpu_share,
        "meets_target": day["wall_s"] / share <= MAX_DAY_SHARE_RATIO,
        "meets_target_cpu": day["cpu_s"] / cpu_share <= MAX_DAY_SHARE_RATIO,
    }


def spark(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The Spark engine (local[2]) vs the embedded engine on the same log."""
    _generate(root / "spark", args, args.spark_events)
    polars = measure("polars", root / "spark", root / "out-spark-polars")
    spark = measure("spark", root / "spark", root / "out-spark")
    for r in (polars, spark):
        print(line(r), flush=True)
    ratio, same = spark["wall_s"] / polars["wall_s"], polars["content_hash"] == spark["content_hash"]
    print(
        f"spark local[2] / polars wall time: x{ratio:.1f}; same content hash: {same}; "
        f"spark stages {spark['stage_seconds']}"
    )
    return {
        "events": args.spark_events,
        "polars": polars,
        "spark": spark,
        "spark_vs_polars_wall": ratio,
        "same_content_hash": same,
    }


def line(r: dict[str, Any]) -> str:
    return (
        f"{r['engine']:7s} {r['events']:>11,} events  wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
        f"{r['events_per_s'] / 1e3:7.1f} k events/s  peak RSS {r['peak_rss_bytes'] / 1e9:5.2f} GB  "
        f"load {r['load_avg_1m_before']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--baseline-events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--bad-rows", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the large Polars ETL (the median counts)")
    parser.add_argument("--daily-events", type=int, default=10_000_000, help="7-day log of the daily run; 0: skip")
    parser.add_argument("--spark-events", type=int, default=1_000_000, help="log of the Spark comparison; 0: skip")
    parser.add_argument("--skip-core", action="store_true", help="only the daily and Spark parts (issue #17)")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    scaling: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aptrank-bench-etl-") as tmp:
        if args.daily_events:
            scaling["daily"] = daily(Path(tmp), args)
        if args.spark_events:
            scaling["spark"] = spark(Path(tmp), args)
    if args.skip_core:
        previous = json.loads((ROOT / "bench" / "results" / "etl.json").read_text())
        write_result("etl", previous | scaling)
        return

    with tempfile.TemporaryDirectory(prefix="aptrank-bench-etl-") as tmp:
        root = Path(tmp)
        _generate(root / "big", args, args.events)
        _generate(root / "small", args, args.baseline_events)
        big = repeated("polars", root / "big", root / "out-big", args.repeats, fresh=True)
        small = measure("polars", root / "small", root / "out-small")
        pandas = measure("pandas", root / "small", root / "out-pandas")
        parity = same_examples(root / "out-small", root / "out-pandas")
    slowdown = (pandas["wall_s"] / pandas["events"]) / (big["wall_s"] / big["events"])
    result = {
        "benchmark": "etl",
        "config": {k: v for k, v in vars(args).items() if k != "child"} | {"etl_config": str(CONFIG.relative_to(ROOT))},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "polars": pl.__version__,
        },
        "polars": big,
        "polars_baseline_size": small,
        "pandas_baseline": pandas,
        **scaling,
        "pandas_vs_polars_same_examples": parity,
        "pandas_per_event_slowdown_vs_polars_large": slowdown,
        "pandas_per_event_slowdown_vs_polars_same_size": (pandas["wall_s"] / small["wall_s"]),
        "targets": {
            "events_per_s_min": MIN_EVENTS_PER_S,
            "peak_rss_bytes_max": MAX_RSS_BYTES,
            "pandas_slowdown_min": MIN_PANDAS_SLOWDOWN,
        },
        "meets_targets": {
            "throughput": big["events_per_s"] >= MIN_EVENTS_PER_S,
            "peak_rss": big["peak_rss_bytes"] <= MAX_RSS_BYTES,
            "pandas_slowdown": slowdown >= MIN_PANDAS_SLOWDOWN,
        },
    }
    print(f"polars: median of {args.repeats} runs, largest peak RSS; same content hash: {big['same_content_hash']}")
    for r in (big, small, pandas):
        print(line(r))
    print(f"polars stages (large): {big['stage_seconds']}")
    print(
        f"pandas per-event time / polars ({args.events:,} events): x{slowdown:.1f}; at the same size: "
        f"x{result['pandas_per_event_slowdown_vs_polars_same_size']:.1f}; same examples: {parity['equal']} "
        f"(max dense diff {parity.get('max_abs_dense_diff', float('nan')):.2e})"
    )
    print(
        f"targets (>= {MIN_EVENTS_PER_S:,} events/s, <= 4 GB, pandas >= x{MIN_PANDAS_SLOWDOWN:.0f}): "
        f"{result['meets_targets']}"
    )
    write_result("etl", result)


if __name__ == "__main__":
    main()
