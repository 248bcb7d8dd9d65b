"""Synthetic generator output: canonical tables, day partitions and part rolling, manifest row
counts, timestamps, byte-for-byte determinism and the overwrite rule."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from aptrank.data.adapters import load_source
from aptrank.data.schema import EVENTS, ITEMS, TS_DTYPE, USERS, check_schema
from aptrank.data.synthetic import TRUTH_COLUMNS, GeneratorConfig, generate

CFG = GeneratorConfig(
    users=500, items=300, events=30_000, days=3, seed=7, chunk_size=4_000, rows_per_part=9_000, truth=True
)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "log"
    generate(path, CFG)
    return path


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tables_meet_the_canonical_schema(out: Path) -> None:
    for f in sorted((out / "events").rglob("*.parquet")):
        schema = pl.read_parquet_schema(f)
        check_schema(schema, EVENTS, str(f))
        assert list(schema) == [*EVENTS.names, "tab", *TRUTH_COLUMNS]
        assert schema["tab"] == pl.Int64 and schema["p_click"] == pl.Float32
    check_schema(pl.read_parquet_schema(out / "items.parquet"), ITEMS, "items")
    check_schema(pl.read_parquet_schema(out / "users.parquet"), USERS, "users")
    items = pl.read_parquet(out / "items.parquet")
    assert items["item_id"].to_list() == list(range(CFG.items))
    assert items["upload_ts"].dtype == TS_DTYPE
    assert items["upload_ts"].max() < dt.datetime(2022, 4, 8, tzinfo=dt.UTC)
    assert items["duration_ms"].min() >= 3_000 and items["duration_ms"].max() <= 600_000
    users = pl.read_parquet(out / "users.parquet")
    assert users["user_id"].to_list() == list(range(CFG.users))
    assert users.columns == ["user_id", "age_bucket", "gender", "activity_level", "signup_days"]


def test_day_partitions_parts_and_row_groups(out: Path) -> None:
    days = sorted(p.name for p in (out / "events").iterdir())
    assert days == ["date=2022-04-08", "date=2022-04-09", "date=2022-04-10"]
    for day in days:
        parts = sorted(p.name for p in (out / "events" / day).iterdir())
        # ~10k rows a day with rows_per_part=9000: every day rolls over to a second part
        assert parts == ["part-00000.parquet", "part-00001.parquet"]
        for part in parts:
            meta = pq.ParquetFile(out / "events" / day / part).metadata
            assert meta.num_rows <= CFG.rows_per_part
            assert all(meta.row_group(i).num_rows <= CFG.chunk_size for i in range(meta.num_row_groups))


def test_manifest_counts_every_file(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    files = {str(p.relative_to(out)): pq.ParquetFile(p).metadata.num_rows for p in (out / "events").rglob("*.parquet")}
    assert manifest["files"] == files
    assert manifest["rows"] == {"events": 30_000, "clean_events": 30_000, "items": 300, "users": 500}
    assert sum(manifest["bad_rows"].values()) == 0
    assert manifest["seed"] == 7 and manifest["params"] == CFG.to_dict()


def test_timestamps_fall_in_their_day_and_strictly_increase(out: Path) -> None:
    for day_dir in sorted((out / "events").iterdir()):
        day = dt.date.fromisoformat(day_dir.name.removeprefix("date="))
        ts = pl.concat([pl.read_parquet(f) for f in sorted(day_dir.iterdir())])["ts"]
        assert ts.null_count() == 0
        assert (ts.dt.date() == day).all()
        assert (ts.diff().drop_nulls() > dt.timedelta(0)).all()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = GeneratorConfig(
        users=200, items=100, events=5_000, days=2, seed=3, bad_rows=0.1, truth=True, chunk_size=1_000
    )
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    generate(tmp_path / "c", GeneratorConfig(**{**cfg.to_dict(), "seed": 4}))
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert len(a) == 2 + 3  # one part per day, items, users, manifest
    assert a == b
    assert a.keys() == c.keys()
    differing = {name for name in a if a[name] != c[name]}
    assert differing == set(a)  # every file, manifest included (it records the seed)


def test_existing_output_needs_overwrite_and_leaves_no_stale_parts(tmp_path: Path) -> None:
    big = GeneratorConfig(users=50, items=40, events=3_000, days=3, chunk_size=500, rows_per_part=500)
    generate(tmp_path, big)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already holds generator output"):
        generate(tmp_path, big)
    small = GeneratorConfig(users=50, items=40, events=500, days=1, chunk_size=500, rows_per_part=500)
    manifest = generate(tmp_path, small, overwrite=True)
    files = {str(p.relative_to(tmp_path)) for p in (tmp_path / "events").rglob("*.parquet")}
    assert files == set(manifest["files"]) == {"events/date=2022-04-08/part-00000.parquet"}
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_output_loads_through_the_canonical_adapter(out: Path) -> None:
    tables = load_source("canonical", out)
    events = tables.events.collect()
    assert events.height == CFG.events and events.columns == [*EVENTS.names, "tab", *TRUTH_COLUMNS]
    assert tables.items is not None and tables.items.collect().height == CFG.items
    assert tables.users is not None and tables.users.collect().height == CFG.users
