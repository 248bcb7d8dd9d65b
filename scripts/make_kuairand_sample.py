"""Build the shipped KuaiRand sample (data/samples/kuairand-pure/) from a KuaiRand-Pure download folder.

The log is copied as is (already Parquet); the two CSV side tables become Parquet with the dtypes
the CSV reader infers (no column renamed: the `kuairand` adapter maps original columns). LICENSE
(CC BY-SA 4.0) and the attribution README travel with the files. Run once by a maintainer:

    .venv/bin/python scripts/make_kuairand_sample.py SRC_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "data" / "samples" / "kuairand-pure"


def main(src: Path) -> None:
    DEST.mkdir(parents=True, exist_ok=True)
    for log in src.glob("log_*.parquet"):
        pl.read_parquet(log).write_parquet(DEST / log.name, compression="zstd", statistics=True)
    for csv in src.glob("*.csv"):
        pl.read_csv(csv, infer_schema_length=None).write_parquet(DEST / f"{csv.stem}.parquet", compression="zstd")
    shutil.copyfile(src / "LICENSE", DEST / "LICENSE")
    print(f"wrote {sorted(p.name for p in DEST.iterdir())}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_kuairand_sample.py SRC_DIR (a KuaiRand-Pure folder: log_*.parquet, *.csv, LICENSE)")
    main(Path(sys.argv[1]))
