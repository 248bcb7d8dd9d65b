"""Micro timing of the online request's feature lookup (:meth:`serving.features.CandidateFeatures.encode`).

The request path of ``aptrank serve`` without HTTP and model: each request is built as the service
builds it (one user repeated, 100 known items, integer epoch-ms ``ts`` within the last day before
the snapshot cutoff, a random ``tab``; seeded as in ``bench/serve_load.py``) and encoded to model
inputs. Reports the load time of :class:`~serving.features.CandidateFeatures` (with its checks), the
per-request p50/p99/mean (wall) and mean CPU time, and a digest of every array produced, so two code
versions can be compared
for equal output as well as time. Single process, one core. ``--features`` defaults to the real ETL
on the shipped KuaiRand sample (``configs/etl/kuairand.yaml``, run into a temporary folder). Prints
one result line and writes ``bench/results/feature_lookup.json``.

    .venv/bin/python bench/feature_lookup.py [--features ETL_DIR] [--requests 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from report import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ETL_CONFIG = ROOT / "configs" / "etl" / "kuairand.yaml"
CANDIDATES = 100
TABS = 6
DAY_MS = 86_400_000


def request_frames(features: Path, n: int, seed: int) -> list[pl.DataFrame]:
    """``n`` candidate frames shaped like the online service's (``serving.service``)."""
    from aptrank.data.spec import FeatureSpec

    spec = FeatureSpec.read(features)
    users = pl.read_parquet(features / "snapshot" / "users.parquet", columns=["user_id"])["user_id"].to_numpy()
    items = pl.read_parquet(features / "snapshot" / "items.parquet", columns=["item_id"])["item_id"].to_numpy()
    cutoff = pl.Series([spec.extras["snapshot"]["cutoff"]]).str.to_datetime(time_zone="UTC").dt.epoch("ms")[0]
    context = list(spec.extras.get("context", []))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        user, ts = int(rng.choice(users)), int(cutoff - rng.integers(0, DAY_MS))
        columns = [
            pl.Series("user_id", [user]).new_from_index(0, CANDIDATES),
            pl.Series("item_id", rng.choice(items, CANDIDATES, replace=False).tolist()),
            pl.Series("ts", [ts]).new_from_index(0, CANDIDATES),
        ]
        tab = int(rng.integers(0, TABS))
        columns += [pl.Series(c, [tab]).new_from_index(0, CANDIDATES) for c in context]
        frames.append(pl.DataFrame(columns))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, help="an ETL output directory (default: the sample's ETL)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        features = args.features or sample_etl(Path(tmp))
        result = measure(features, args.requests, args.seed)
    write_result("feature_lookup", result)


def sample_etl(tmp: Path) -> Path:
    """The real ETL on the shipped KuaiRand sample, into ``tmp``."""
    from aptrank.data.adapters import SAMPLE_DIR
    from aptrank.data.etl import load_config, run_etl

    run_etl("kuairand", SAMPLE_DIR, tmp / "etl", load_config(ETL_CONFIG), progress=None)
    return tmp / "etl"


def measure(path: Path, requests: int, seed: int) -> dict[str, object]:
    """Load time, per-request percentiles and the output digest (see module docstring)."""
    from aptrank.serving.features import CandidateFeatures

    load_avg = os.getloadavg()[0]
    start = time.perf_counter()
    features = CandidateFeatures(path)
    load_s = time.perf_counter() - start
    frames = request_frames(path, requests, seed)
    for frame in frames[:50]:  # warm-up
        features.encode(frame)
    digest = hashlib.sha256()
    times = np.empty(len(frames))
    cpu = time.process_time()
    for k, frame in enumerate(frames):
        t0 = time.perf_counter()
        encoded = features.encode(frame)
        times[k] = time.perf_counter() - t0
        for name in sorted(encoded.arrays):
            digest.update(np.ascontiguousarray(encoded.arrays[name]).tobytes())
    cpu_us = (time.process_time() - cpu) / len(frames) * 1e6  # digest included; less noisy on shared cores
    us = times * 1e6
    result = {
        "requests": requests,
        "candidates_per_request": CANDIDATES,
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
        "mean_us": round(float(us.mean()), 1),
        "cpu_us_per_request": round(cpu_us, 1),
        "load_s": round(load_s, 3),
        "arrays_sha256": digest.hexdigest(),
        "load_avg_1m_before": load_avg,
    }
    print(
        f"feature lookup: {requests} requests x {CANDIDATES} candidates: p50 {result['p50_us']:.0f} us, "
        f"p99 {result['p99_us']:.0f} us, mean {result['mean_us']:.0f} us, cpu {cpu_us:.0f} us; load {load_s:.2f} s; "
        f"arrays sha256 {digest.hexdigest()[:16]}"
    )
    return result


if __name__ == "__main__":
    main()
