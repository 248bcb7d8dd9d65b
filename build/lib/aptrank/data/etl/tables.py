"""Side tables for the ETL: item and user attributes as joined onto events, entity key lists, and
the feature snapshot tables (``DIR/snapshot/``) with their layout entry in the FeatureSpec."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.adapters import CanonicalTables
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfigError, OutputConfig, iso_utc
from aptrank.data.etl.features import FeaturePlan, item_column
from aptrank.data.etl.parts import write_frame

SNAPSHOT_DIR = "snapshot"
TABLE_FILES: dict[str, str] = {"user": "users.parquet", "item": "items.parquet", "author": "authors.parquet"}


def layout(counts: dict[str, list[str]], columns: dict[str, list[str]], cutoff: dt.datetime) -> dict[str, Any]:
    """The ``extras["snapshot"]`` entry of the FeatureSpec: files, keys and columns per entity."""
    tables = {}
    for entity, file in TABLE_FILES.items():
        if entity in counts or columns.get(entity):
            tables[entity] = {
                "file": f"{SNAPSHOT_DIR}/{file}",
                "key": ENTITY_KEYS[entity],
                "counts": counts.get(entity, []),
                "columns": columns.get(entity, []),
            }
    return {"cutoff": iso_utc(cutoff), "tables": tables}


def _unique_keys(frame: pl.LazyFrame, key: str, file: str) -> None:
    dupes = frame.select(pl.col(key).is_duplicated().sum()).collect().item()
    if dupes:
        raise EtlConfigError(f"{file}: column '{key}' must be unique per row, {dupes} rows share an id")


def _require(frame: pl.LazyFrame, columns: list[str], file: str, what: str) -> None:
    have = frame.collect_schema()
    missing = [c for c in columns if c not in have]
    if missing:
        raise EtlConfigError(f"{file}: {what} {missing} configured but not in the table (columns: {list(have)})")


def item_table(tables: CanonicalTables, plan: FeaturePlan) -> pl.LazyFrame | None:
    """``item_id``, ``author_id``, ``item_duration_ms``, ``item_upload_ts`` and item attributes."""
    if tables.items is None:
        if plan.item_columns:
            raise EtlConfigError(f"item attributes {plan.item_columns} configured but the source has no items table")
        return None
    file = tables.files.get("items", "items")
    _require(tables.items, plan.item_columns, file, "item attributes")
    _unique_keys(tables.items, "item_id", file)
    cols = ["item_id", "author_id", "duration_ms", "upload_ts", *plan.item_columns]
    return tables.items.select(pl.col(c).alias(item_column(c)) for c in dict.fromkeys(cols))


def user_table(tables: CanonicalTables, plan: FeaturePlan) -> pl.LazyFrame | None:
    """``user_id`` and the configured user attributes (None when none are configured)."""
    if not plan.user_columns:
        return None
    if tables.users is None:
        raise EtlConfigError(f"user attributes {plan.user_columns} configured but the source has no users table")
    file = tables.files.get("users", "users")
    _require(tables.users, plan.user_columns, file, "user attributes")
    events_dtype, users_dtype = tables.events.collect_schema()["user_id"], tables.users.collect_schema()["user_id"]
    if events_dtype != users_dtype:
        raise EtlConfigError(
            f"{file}: user_id is {users_dtype} here but {events_dtype} in the events; ids must have one dtype"
        )
    _unique_keys(tables.users, "user_id", file)
    return tables.users.select("user_id", *plan.user_columns)


def entity_keys(
    events: pl.LazyFrame, entity: str, items: pl.LazyFrame | None, users: pl.LazyFrame | None
) -> pl.DataFrame:
    """Sorted distinct non-null keys of an entity: seen in accepted events or in its side table."""
    key = ENTITY_KEYS[entity]
    parts = [events.select(key)]
    side = {"user": users, "item": items, "author": items}[entity]
    if side is not None:
        parts.append(side.select(pl.col(key).cast(events.collect_schema()[key])))
    return pl.concat(parts).drop_nulls().unique().sort(key).collect()


def write_snapshot(
    out_dir: Path,
    keys: dict[str, pl.DataFrame],
    counts: dict[str, pl.DataFrame],
    histories: pl.DataFrame | None,
    items: pl.LazyFrame | None,
    users: pl.LazyFrame | None,
    output: OutputConfig,
) -> dict[str, list[str]]:
    """Write ``snapshot/{users,items,authors}.parquet``; return each table's non-key, non-count columns."""
    columns: dict[str, list[str]] = {}
    for entity, table_keys in keys.items():
        key = ENTITY_KEYS[entity]
        frame = table_keys.lazy()
        if entity in counts:
            frame = frame.join(counts[entity].lazy(), on=key, how="left", maintain_order="left")
        side = {"user": users, "item": items}.get(entity)
        if entity == "user" and histories is not None:
            frame = frame.join(histories.lazy(), on=key, how="left", maintain_order="left")
        if side is not None:
            frame = frame.join(
                side.with_columns(pl.col(key).cast(table_keys.schema[key])), on=key, how="left", maintain_order="left"
            )
        df = frame.collect()
        count_cols = set(counts[entity].columns) if entity in counts else set()
        columns[entity] = [c for c in df.columns if c != key and c not in count_cols]
        write_frame(df, out_dir / SNAPSHOT_DIR / TABLE_FILES[entity], output)
    return columns
