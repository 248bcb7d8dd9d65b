"""Hand-made canonical logs for the ETL tests (written as an ``aptrank generate``-style folder).

The reference log (:func:`handmade_events`) is small enough that every feature value is worked
out by hand in the tests. Times are hours after T0 = 2024-01-01 00:00 UTC (a Monday).
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.etl.config import EtlConfig, config_from_dict
from aptrank.data.schema import TS_DTYPE

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR_MS = 3_600_000


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def events_frame(rows: list[tuple[Any, ...]], id_dtype: type[pl.DataType] = pl.Int64) -> pl.DataFrame:
    """Rows of (user_id, item_id, hours, click, like, watch_ms, tab); hours None -> null ts."""
    users, items, hours, clicks, likes, watches, tabs = (list(c) for c in zip(*rows, strict=True))
    ts = [None if h is None else int((at(0).timestamp() + h * 3600) * 1000) for h in hours]
    return pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=id_dtype),
            "item_id": pl.Series(items, dtype=id_dtype),
            "ts": pl.Series(ts, dtype=pl.Int64).cast(TS_DTYPE),
            "click": pl.Series(clicks, dtype=pl.Int8),
            "like": pl.Series(likes, dtype=pl.Int8),
            "watch_ms": pl.Series(watches, dtype=pl.Int64),
            "tab": pl.Series(tabs, dtype=pl.Int64),
        }
    )


HANDMADE_ROWS: list[tuple[Any, ...]] = [
    # user, item, hour, click, like, watch_ms, tab        finish (duration 10s/20s/30s, ratio 0.95)
    (1, 10, 0, 1, 0, 10_000, 0),  # r0  finish 1
    (1, 11, 1, 0, 0, 1_000, 1),  # r1  finish 0
    (2, 10, 1, 1, 1, 9_500, 0),  # r2  finish 1 (exactly 0.95 x 10 s)
    (1, 12, 30, 1, 1, 0, 2),  # r3  finish 0
    (1, 10, 30, 1, 0, 20_000, 0),  # r4  finish 1 (same ts as r3 for user 1)
    (2, 12, 30, 0, 0, 30_000, 1),  # r5  finish 1 (same ts as r3 for item 12)
    (2, 11, 48, 1, 0, None, 3),  # r6  finish 0 (null watch time)
    (1, 11, 200, 0, 1, 19_000, 0),  # r7  finish 1 (exactly 0.95 x 20 s)
]


def handmade_items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "author_id": [100, 100, 101, 102],
            "duration_ms": [10_000, 20_000, 30_000, 5_000],
            "category": ["a", "b", "a", "c"],
            "upload_ts": pl.Series([at(-48), at(-240), None, at(-1)], dtype=pl.Datetime("us", "UTC")).cast(TS_DTYPE),
        }
    )


def handmade_users() -> pl.DataFrame:
    return pl.DataFrame({"user_id": [1, 2, 3], "seg": ["x", "y", "x"], "age": [10, 30, 50]})


def write_canonical(
    root: Path, events: pl.DataFrame, items: pl.DataFrame | None = None, users: pl.DataFrame | None = None
) -> Path:
    """A canonical source folder (events.parquet, items.parquet, users.parquet)."""
    root.mkdir(parents=True, exist_ok=True)
    events.write_parquet(root / "events.parquet")
    if items is not None:
        items.write_parquet(root / "items.parquet")
    if users is not None:
        users.write_parquet(root / "users.parquet")
    return root


HANDMADE_CONFIG: dict[str, Any] = {
    "time_zone": "Asia/Shanghai",
    "tasks": [
        {"name": "click", "kind": "binary_column", "column": "click"},
        {"name": "like", "kind": "binary_column", "column": "like"},
        {"name": "finish", "kind": "watch_ratio", "min_ratio": 0.95},
    ],
    "splits": {"valid_start": "2024-01-02T16:00:00+00:00", "test_start": "2024-01-05T04:00:00+00:00"},
    "features": {
        "windows": ["1d", "7d", "all"],
        "smoothing": 2.0,
        "history": [
            {"name": "clicked", "task": "click", "max_len": 2},
            {"name": "liked", "task": "like", "max_len": 3},
        ],
        "context": ["tab"],
        "user_attributes": {"categorical": ["seg"], "dense": ["age"]},
        "item_attributes": {"categorical": ["category"]},
        "duration_buckets_s": [15, 25],
        "inline_vocab_max": 2,
    },
    "output": {"row_group_size": 4, "chunk_rows": 2, "rows_per_file": 4},
}
"""Splits: train = hours < 40, valid = [40, 100), test >= 100 (r0-r5 / r6 / r7). Tiny chunks and
files so that the chunked writing path (several row groups and part files per split) is tested."""


def config(**overrides: Any) -> EtlConfig:
    """The hand-made log's config with top-level sections replaced/merged by ``overrides``."""
    data = copy.deepcopy(HANDMADE_CONFIG)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data, "<test config>")


def handmade_source(root: Path) -> Path:
    return write_canonical(root, events_frame(HANDMADE_ROWS), handmade_items(), handmade_users())
