"""Source adapters: the shipped KuaiRand log maps onto canonical tables with no row lost, and bad
sources fail with errors naming file, column and expected type."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from aptrank.data.adapters import SourceError, load_source
from aptrank.data.schema import EVENTS, ITEMS, TS_DTYPE, USERS, SchemaError

LOG = "log_standard_2022-04-25_to_2022-04-30.parquet"


def _copy_sample(src: Path, dst: Path, log: pl.DataFrame | None = None) -> Path:
    dst.mkdir()
    for f in src.glob("*.parquet"):
        shutil.copyfile(f, dst / f.name)
    if log is not None:
        log.write_parquet(dst / LOG)
    return dst


def test_kuairand_maps_every_row(kuairand_dir: Path) -> None:
    raw = pl.read_parquet(kuairand_dir / LOG)
    tables = load_source("kuairand", kuairand_dir)
    events = tables.events.collect()
    assert events.height == raw.height == 94_784
    assert events.columns[: len(EVENTS.names)] == EVENTS.names
    assert events.schema["ts"] == TS_DTYPE
    # values carried over, row for row
    assert (events["item_id"] == raw["video_id"]).all()
    assert (events["ts"].dt.epoch("ms") == raw["time_ms"]).all()
    assert (events["watch_ms"] == raw["play_time_ms"]).all()
    assert events["click"].sum() == raw["is_click"].sum()
    assert events["like"].sum() == raw["is_like"].sum()
    assert events["long_view"].sum() == raw["long_view"].sum()
    assert round(events["click"].mean(), 3) == 0.438
    assert events["user_id"].n_unique() == 21_184 and events["item_id"].n_unique() == 5_564


def test_kuairand_side_tables(kuairand_dir: Path) -> None:
    tables = load_source("kuairand", kuairand_dir)
    assert tables.items is not None and tables.users is not None
    items, users = tables.items.collect(), tables.users.collect()
    assert items.height == 7_583 and users.height == 27_285
    assert items.columns[: len(ITEMS.names)] == ITEMS.names
    assert users.columns[0] == USERS.names[0]
    first = items.filter(pl.col("item_id") == 0).row(0, named=True)
    assert first["duration_ms"] == 87_433 and first["category"] == "39" and first["author_id"] == 7_349_781
    assert str(first["upload_ts"]) == "2022-04-10 00:00:00+00:00"


def test_unknown_source_names_the_known_ones(kuairand_dir: Path) -> None:
    with pytest.raises(SourceError, match="unknown source 'criteo'.*canonical, kuairand"):
        load_source("criteo", kuairand_dir)


def test_missing_input_and_missing_log(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load_source("kuairand", tmp_path / "nope")
    with pytest.raises(SourceError, match=r"no KuaiRand log \(log_\*\) file found.*log_\*\.parquet"):
        load_source("kuairand", tmp_path)


def test_missing_column_names_file_column_and_type(kuairand_dir: Path, tmp_path: Path) -> None:
    log = pl.read_parquet(kuairand_dir / LOG).drop("is_click")
    d = _copy_sample(kuairand_dir, tmp_path / "k", log)
    with pytest.raises(SourceError, match=rf"{LOG}: missing required column 'is_click' \(expected an integer type\)"):
        load_source("kuairand", d)


def test_mistyped_column_names_file_column_and_type(kuairand_dir: Path, tmp_path: Path) -> None:
    log = pl.read_parquet(kuairand_dir / LOG).with_columns(pl.col("time_ms").cast(pl.String))
    d = _copy_sample(kuairand_dir, tmp_path / "k", log)
    with pytest.raises(SourceError, match=r"column 'time_ms' has dtype String, expected an integer type"):
        load_source("kuairand", d)


def test_canonical_round_trip(kuairand_dir: Path, tmp_path: Path) -> None:
    tables = load_source("kuairand", kuairand_dir)
    out = tmp_path / "canon"
    (out / "events" / "date=2022-04-25").mkdir(parents=True)
    events = tables.events.collect()
    events.head(50_000).write_parquet(out / "events" / "date=2022-04-25" / "part-0.parquet")
    (out / "events" / "date=2022-04-26").mkdir()
    events.tail(events.height - 50_000).write_parquet(out / "events" / "date=2022-04-26" / "part-0.parquet")
    tables.items.collect().write_parquet(out / "items.parquet")
    back = load_source("canonical", out)
    assert back.events.collect().equals(events)
    assert "date" not in back.events.collect_schema()  # partition folders are not columns
    assert back.items is not None and back.users is None


def test_canonical_mistyped_ts_is_named(tmp_path: Path) -> None:
    out = tmp_path / "canon"
    out.mkdir()
    pl.DataFrame(
        {"user_id": [1], "item_id": [2], "ts": [1_650_000_000_000], "click": [1], "like": [0], "watch_ms": [10]},
        schema_overrides={"click": pl.Int8, "like": pl.Int8},
    ).write_parquet(out / "events.parquet")
    msg = r"events.parquet: column 'ts' of the events table has dtype Int64, expected Datetime"
    with pytest.raises(SchemaError, match=msg):
        load_source("canonical", out)
