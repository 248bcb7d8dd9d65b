"""KuaiRand adapter: the original KuaiRand files onto canonical tables.

Source: Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly Exposed
Videos", CIKM 2022 (CC BY-SA 4.0). The folder holds ``log_*.parquet|csv`` (impressions),
``user_features*.parquet|csv`` and ``video_features_basic*.parquet|csv``.

Mapping (events): ``video_id`` -> ``item_id``; ``time_ms`` (epoch ms) -> ``ts``; ``is_click`` ->
``click``; ``is_like`` -> ``like``; ``play_time_ms`` -> ``watch_ms``. Context kept: ``tab`` and the
served ``duration_ms`` (the log's own duration, which the finish label prefers over the item
table's); KuaiRand's other feedback columns become optional binary task columns (``follow``,
``comment``, ``forward``, ``hate``, ``long_view``, ``profile_enter``) so a task is one config line.
Items: ``video_duration`` -> ``duration_ms``; ``tag`` -> ``category``; ``upload_dt`` (date) ->
``upload_ts`` (midnight UTC); other columns stay as attributes. Users: every column kept.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aptrank.data.adapters.base import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    CanonicalTables,
    find_one,
    require_raw_columns,
    scan,
)
from aptrank.data.schema import TS_DTYPE

LOG_COLUMNS = ("user_id", "video_id", "time_ms", "is_click", "is_like", "play_time_ms", "duration_ms", "tab")
EXTRA_TASKS = {
    "is_follow": "follow",
    "is_comment": "comment",
    "is_forward": "forward",
    "is_hate": "hate",
    "long_view": "long_view",
    "is_profile_enter": "profile_enter",
}
NUMERIC = INTEGER_DTYPES + FLOAT_DTYPES


def _label(col: str) -> pl.Expr:
    """0/1 source column -> Int8; out-of-range values become null (the ETL rejects them)."""
    return pl.col(col).cast(pl.Int8, strict=False)


def load(path: Path) -> CanonicalTables:
    logs = find_one(path, ["log_*.parquet", "log_*.csv"], "KuaiRand log (log_*)")
    log_name = ", ".join(str(p) for p in logs)
    raw = scan(logs)
    schema = require_raw_columns(raw, log_name, {c: INTEGER_DTYPES for c in LOG_COLUMNS})
    extras = [pl.col(src).cast(pl.Int8, strict=False).alias(dst) for src, dst in EXTRA_TASKS.items() if src in schema]
    events = raw.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("video_id").cast(pl.Int64).alias("item_id"),
        pl.col("time_ms").cast(pl.Int64).cast(TS_DTYPE).alias("ts"),
        _label("is_click").alias("click"),
        _label("is_like").alias("like"),
        pl.col("play_time_ms").cast(pl.Int64).alias("watch_ms"),
        pl.col("tab").cast(pl.Int64),
        pl.col("duration_ms").cast(pl.Int64),
        *extras,
    )
    files = {"events": log_name}
    tables = CanonicalTables(events=events, files=files)

    videos = find_one(path, ["video_features_basic*.parquet", "video_features_basic*.csv"], "KuaiRand video", False)
    if videos:
        files["items"] = str(videos[0])
        raw_items = scan(videos[:1])
        require_raw_columns(
            raw_items,
            files["items"],
            {
                "video_id": INTEGER_DTYPES,
                "author_id": INTEGER_DTYPES,
                "video_duration": NUMERIC,
                "upload_dt": (pl.String(),),
                "tag": (pl.String(), *INTEGER_DTYPES),
            },
        )
        tables.items = raw_items.select(
            pl.col("video_id").cast(pl.Int64).alias("item_id"),
            pl.col("author_id").cast(pl.Int64),
            pl.col("video_duration").round(0).cast(pl.Int64).alias("duration_ms"),
            pl.col("tag").cast(pl.String).alias("category"),
            pl.col("upload_dt")
            .str.to_date("%Y-%m-%d", strict=False)
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone("UTC")
            .cast(TS_DTYPE)
            .alias("upload_ts"),
            pl.all().exclude("video_id", "author_id", "video_duration", "tag", "upload_dt"),
        )

    users = find_one(path, ["user_features*.parquet", "user_features*.csv"], "KuaiRand user", False)
    if users:
        files["users"] = str(users[0])
        raw_users = scan(users[:1])
        require_raw_columns(raw_users, files["users"], {"user_id": INTEGER_DTYPES})
        tables.users = raw_users.with_columns(pl.col("user_id").cast(pl.Int64))
    tables.check()
    return tables
