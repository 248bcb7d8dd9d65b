"""Row validation: every canonical event gets at most one reject reason (first failing rule).

Rules, in this fixed order (the order decides the reason of a row that breaks several):

1. ``null_key``             user_id or item_id is null;
2. ``malformed_key``        an integer id is negative, or a string id is empty/blank;
3. ``null_ts``              ts is null;
4. ``ts_out_of_range``      ts outside the configured ``[time_range.start, time_range.end)``;
4b. ``implausible_ts``      ts before ``validation.plausible_after`` (default 2000-01-01) or later
                            than the run's clock plus ``validation.max_future_skew_hours`` (default
                            24): a clock or encoding error, never a real impression (issue #20; a
                            row from 2200 would otherwise move the snapshot cutoff to 2200);
5. ``label_not_binary``     click, like or a binary_column task's column is not 0/1 (null included);
6. ``negative_watch``       watch_ms < 0 (null watch time is allowed: it gives finish = 0);
7. ``unknown_item``         the item has no row in the items table (when ``require_item_metadata``);
8. ``duplicate_impression`` the same (user_id, item_id, ts) as an earlier row (input order) that
                            passed rules 1-7: the first copy is kept, every later copy rejected.

Design decision (docs/etl.md): duplicates are rejected, so accepted + rejected == input always, but
they are a delivery artefact (at-least-once logging: the KuaiRand-Pure sample has 2,979 extra
copies, 3.1% of rows), not bad data, so the ``max_reject_rate`` gate counts rules 1-7 only and
duplicates have their own ``max_duplicate_rate`` gate.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from aptrank.data.etl.config import EtlConfig, EtlConfigError

REASONS: tuple[str, ...] = (
    "null_key",
    "malformed_key",
    "null_ts",
    "ts_out_of_range",
    "implausible_ts",
    "label_not_binary",
    "negative_watch",
    "unknown_item",
    "duplicate_impression",
)
DUPLICATE = "duplicate_impression"
VALIDITY_REASONS: tuple[str, ...] = tuple(r for r in REASONS if r != DUPLICATE)
REASON_DTYPE = pl.Enum(REASONS)
ROW = "_row"
"""Input row number (0-based, adapter order); kept in the reject file as ``input_row``."""


def binary_columns(cfg: EtlConfig) -> list[str]:
    """Event columns that must hold 0/1: click, like and every binary_column task's column."""
    cols = ["click", "like"]
    for t in cfg.tasks:
        if t.kind == "binary_column" and t.column not in cols:
            cols.append(str(t.column))
    return cols


def check_events(
    events: pl.LazyFrame,
    items: pl.LazyFrame | None,
    cfg: EtlConfig,
    events_file: str = "events",
    now: dt.datetime | None = None,
) -> pl.LazyFrame:
    """``events`` with ``_row`` (input position) and ``reason`` (null = accepted) appended;
    ``now`` (default: the clock) is the run's time for the plausible-time rule."""
    schema = events.collect_schema()
    for col in binary_columns(cfg):
        if col not in schema:
            raise EtlConfigError(
                f"{events_file}: task label column '{col}' is not an event column (columns: {list(schema)})"
            )
    frame = events.with_row_index(ROW)
    rules: list[tuple[str, pl.Expr]] = [
        ("null_key", pl.col("user_id").is_null() | pl.col("item_id").is_null()),
        ("malformed_key", _malformed("user_id", schema["user_id"]) | _malformed("item_id", schema["item_id"])),
        ("null_ts", pl.col("ts").is_null()),
    ]
    out_of_range = _out_of_range(cfg)
    if out_of_range is not None:
        rules.append(("ts_out_of_range", out_of_range))
    rules.append(("implausible_ts", _implausible(cfg, now or dt.datetime.now(dt.UTC))))
    not_binary = pl.any_horizontal([~pl.col(c).is_in([0, 1]).fill_null(False) for c in binary_columns(cfg)])
    rules += [("label_not_binary", not_binary), ("negative_watch", pl.col("watch_ms") < 0)]
    if items is not None and items.collect_schema()["item_id"] != schema["item_id"]:
        raise EtlConfigError(
            f"{events_file}: item_id is {schema['item_id']} in the events but {items.collect_schema()['item_id']} "
            "in the items table; ids must have one dtype"
        )
    if cfg.validation.require_item_metadata:
        if items is None:
            raise EtlConfigError(
                "validation.require_item_metadata is true but the source has no items table "
                "(set it to false to accept events without item metadata)"
            )
        known = items.select(pl.col("item_id").unique(), pl.lit(True).alias("_known_item"))
        frame = frame.join(known, on="item_id", how="left", maintain_order="left", nulls_equal=False)
        rules.append(("unknown_item", pl.col("_known_item").is_null()))

    reason: pl.Expr = pl.lit(None, dtype=REASON_DTYPE)
    for name, failed in reversed(rules):
        reason = pl.when(failed.fill_null(False)).then(pl.lit(name, dtype=REASON_DTYPE)).otherwise(reason)
    frame = frame.with_columns(reason.alias("reason"))
    # Invalid rows carry their own row number so they never collide; valid rows compare on the key.
    key = pl.struct("user_id", "item_id", "ts", pl.when(pl.col("reason").is_not_null()).then(pl.col(ROW)).alias("_inv"))
    dup = pl.col("reason").is_null() & ~key.is_first_distinct()
    frame = frame.with_columns(
        pl.when(dup).then(pl.lit(DUPLICATE, dtype=REASON_DTYPE)).otherwise(pl.col("reason")).alias("reason")
    )
    return frame.drop("_known_item", strict=False)


def _malformed(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return pl.col(col).str.strip_chars() == ""
    return pl.col(col) < 0


def _implausible(cfg: EtlConfig, now: dt.datetime) -> pl.Expr:
    v = cfg.validation
    earliest = cfg.local_time(v.plausible_after)
    latest = now + dt.timedelta(hours=v.max_future_skew_hours)
    ts = pl.col("ts")
    return (ts < pl.lit(earliest).dt.cast_time_unit("ms")) | (ts > pl.lit(latest).dt.cast_time_unit("ms"))


def _out_of_range(cfg: EtlConfig) -> pl.Expr | None:
    r = cfg.time_range
    parts = []
    if r.start is not None:
        parts.append(pl.col("ts") < pl.lit(cfg.local_time(r.start)).dt.cast_time_unit("ms"))
    if r.end is not None:
        parts.append(pl.col("ts") >= pl.lit(cfg.local_time(r.end)).dt.cast_time_unit("ms"))
    return pl.any_horizontal(parts) if parts else None
