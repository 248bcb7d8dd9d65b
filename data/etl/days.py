"""What the incremental daily ETL's parts share (:mod:`data.etl.daily`, :mod:`data.etl.bootstrap`): the
output folder's sub-folders, a day's bounds in the config's time zone, the config rules of a daily
run, and the digest that compares an incremental folder with a full recompute."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl

from aptrank.data.etl.config import EtlConfig, EtlConfigError
from aptrank.data.etl.freshness import day_start
from aptrank.data.etl.run import example_files
from aptrank.data.etl.splits import SPLITS

STATE_DIR = "state"
DAYS_DIR = "days"


def day_bounds(cfg: EtlConfig, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a calendar day in the config's time zone, as aware UTC datetimes."""
    return day_start(day, cfg.time_zone), day_start(day + dt.timedelta(days=1), cfg.time_zone)


def check_daily_config(cfg: EtlConfig, day: dt.date) -> None:
    """Refuse a config or day an incremental run cannot take (fraction splits, a day outside ``time_range``)."""
    if cfg.splits.valid_start is None:
        raise EtlConfigError("splits: incremental runs need fixed split dates (valid_start, test_start), not fractions")
    start, end = day_bounds(cfg, day)
    r = cfg.time_range
    if (r.start and start < cfg.local_time(r.start)) or (r.end and end > cfg.local_time(r.end)):
        raise EtlConfigError(f"time_range: day {day} is not inside [{r.start}, {r.end})")


def parse_utc(value: str) -> dt.datetime:
    """An ISO 8601 UTC instant as the FeatureSpec writes it (``Z`` suffix) -> an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def examples_digest(root: str | Path) -> str:
    """sha256 over every split's example rows in order (schema and each row's hash), whatever the part
    files: the incremental folder and a full recompute agree iff they hold the same rows."""
    h = hashlib.sha256()
    for split in SPLITS:
        files = example_files(root, split)
        frame = pl.read_parquet(files) if files else pl.DataFrame()
        h.update(f"{split}\0{frame.schema}\0{frame.height}\n".encode())
        h.update(frame.hash_rows(seed=0, seed_1=1, seed_2=2, seed_3=3).to_numpy().tobytes())
    return h.hexdigest()
