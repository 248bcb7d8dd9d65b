"""Micro timing of the online request's feature lookup (:meth:`serving.features.CandidateFeatures.encode`).

The request path of ``aptrank serve`` without HTTP and model: each request is built as the service
builds it (one user repeated, 100 known items, integer epoch-ms ``ts`` within the last day before
the snapshot cutoff, a random ``tab``; seeded as in ``bench/serve_load.py``) and encoded to model
inputs. Reports the load time of :class:`~serving.features.CandidateFeatures` (with its checks), the
per-request p50/p99/mean, and a digest of every array produced, so two code versions can be compared
for equal output as well as time. Single process, one core; prints one result line, writes nothing.

    .venv/bin/python bench/feature_lookup.py --features ETL_DIR [--requests 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    parser.add_argument("--features", type=Path, required=True, help="an ETL output directory")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from aptrank.serving.features import CandidateFeatures

    start = time.perf_counter()
    features = CandidateFeatures(args.features)
    load_s = time.perf_counter() - start
    frames = request_frames(args.features, args.requests, args.seed)
    for frame in frames[:50]:  # warm-up
        features.encode(frame)
    digest = hashlib.sha256()
    times = np.empty(len(frames))
    for k, frame in enumerate(frames):
        t0 = time.perf_counter()
        encoded = features.encode(frame)
        times[k] = time.perf_counter() - t0
        for name in sorted(encoded.arrays):
            digest.update(np.ascontiguousarray(encoded.arrays[name]).tobytes())
    us = times * 1e6
    print(
        f"feature lookup: {args.requests} requests x {CANDIDATES} candidates: p50 {np.percentile(us, 50):.0f} us, "
        f"p99 {np.percentile(us, 99):.0f} us, mean {us.mean():.0f} us; load {load_s:.2f} s; "
        f"arrays sha256 {digest.hexdigest()[:16]}"
    )


if __name__ == "__main__":
    main()
