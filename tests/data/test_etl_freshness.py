"""Feature freshness (``freshness: exact | daily``, issue #19) on a hand-made log over three
Asia/Shanghai days: with ``daily``, every day-D example's entity features equal what the project's
snapshot code (the ETL's ``snapshot/`` read through :class:`data.snapshot.FeatureLookup`, what
serving reads) holds for a snapshot built from the events before day D; a few values are worked out
by hand; ``exact`` keeps its outputs and the two FeatureSpecs differ."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
import yaml
from etl_helpers import at, config, events_frame, handmade_items, handmade_users, write_canonical
from typer.testing import CliRunner

from aptrank.data.encodings import ITEM_AGE
from aptrank.data.etl.config import EtlConfig
from aptrank.data.etl.freshness import day_floor_ms, snapshot_cutoff
from aptrank.data.etl.run import EtlResult, example_files, run_etl
from aptrank.data.etl.splits import SPLITS
from aptrank.data.snapshot import FeatureLookup
from aptrank.data.spec import FeatureSpec

ROWS = [
    # user, item, hour (UTC, from 2024-01-01 00:00), click, like, watch_ms, tab; Shanghai = UTC+8
    (1, 10, -6, 1, 0, 10_000, 0),  # r0   day A = Jan 1 (Shanghai): hours [-8, 16)
    (1, 11, 2, 0, 0, 1_000, 1),  # r1
    (2, 10, 5, 1, 1, 9_500, 0),  # r2
    (1, 12, 15, 1, 1, 0, 2),  # r3
    (1, 10, 17, 1, 0, 20_000, 0),  # r4   day B = Jan 2: hours [16, 40)
    (2, 12, 20, 0, 0, 30_000, 1),  # r5
    (3, 11, 30, 1, 0, 20_000, 3),  # r6
    (1, 13, 39, 1, 1, 5_000, 0),  # r7
    (1, 11, 41, 0, 1, 19_000, 0),  # r8   day C = Jan 3: hours [40, 64)
    (2, 10, 45, 1, 0, 1_000, 1),  # r9
    (3, 12, 50, 0, 0, 0, 2),  # r10
    (1, 12, 60, 1, 0, 30_000, 0),  # r11
]
DAYS = {"A": (-8, 16), "B": (16, 40), "C": (40, 64)}
DAY_DATES = {"A": "2024-01-01", "B": "2024-01-02", "C": "2024-01-03"}
ENTITY = ("user_", "item_", "author_")
HISTORIES = ("clicked", "liked")


def _cfg(freshness: str | None) -> EtlConfig:
    extra = {} if freshness is None else {"freshness": freshness}
    return config(splits={"valid_start": "2024-01-02", "test_start": "2024-01-03"}, **extra)


def _source(root: Path, rows: list[tuple]) -> Path:
    return write_canonical(root, events_frame(rows), handmade_items(), handmade_users())


def _examples(result: EtlResult) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(example_files(result.out_dir, s)) for s in SPLITS])


def _decoded(result: EtlResult, frame: pl.DataFrame, name: str) -> np.ndarray:
    """A dense feature's raw value (log1p count or smoothed rate) from its normalised column."""
    f = next(d for d in result.spec.dense if d.name == name)
    return frame[name].to_numpy().astype(np.float64) * f.std + f.mean


def _entity_columns(spec: FeatureSpec) -> list[str]:
    dense = [d.name for d in spec.dense if d.name.startswith(ENTITY) and d.name != ITEM_AGE]
    return [*dense, *HISTORIES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EtlResult]:
    root = tmp_path_factory.mktemp("fresh")
    source = _source(root / "log", ROWS)
    return {
        name: run_etl("canonical", source, root / name, _cfg(freshness))
        for name, freshness in (("daily", "daily"), ("exact", "exact"), ("default", None))
    }


def test_daily_rows_equal_the_snapshot_of_the_day_before(runs: dict[str, EtlResult], tmp_path: Path) -> None:
    """Day B and C rows vs the snapshot of an ETL over the events before that day, looked up with
    the scorers' own code (the training FeatureSpec and vocabularies, like the served evaluation)."""
    daily = runs["daily"]
    examples = _examples(daily)
    columns = _entity_columns(daily.spec)
    assert len(columns) == 3 * 3 * 4 + 2  # 3 entities x 3 windows x (count + 3 rates), 2 histories
    for day in ("B", "C"):
        start, end = DAYS[day]
        before = [r for r in ROWS if r[2] < start]
        cut = run_etl("canonical", _source(tmp_path / f"log-{day}", before), tmp_path / f"etl-{day}", _cfg("daily"))
        assert cut.spec.extras["snapshot"]["cutoff"] == at(start).isoformat().replace("+00:00", ".000Z")
        features = tmp_path / f"features-{day}"
        shutil.copytree(daily.out_dir, features)
        shutil.rmtree(features / "snapshot")
        shutil.copytree(cut.out_dir / "snapshot", features / "snapshot")
        rows = examples.filter((pl.col("ts") >= at(start)) & (pl.col("ts") < at(end)))
        assert rows.height == 4
        raw = events_frame([r for r in ROWS if start <= r[2] < end])  # the day's candidates, in ts order
        served = FeatureLookup(features).build(raw.select("user_id", "item_id", "ts", "tab")).frame
        for column in columns:
            assert served[column].equals(rows[column]), f"day {day}: {column}"
        # the whole encoded row is what serving computes (ids, context, hour, item age, attributes)
        names = daily.spec.feature_names()
        assert served.select(names).equals(rows.select(names))


def test_daily_values_by_hand(runs: dict[str, EtlResult]) -> None:
    daily, exact = (_examples(runs[k]) for k in ("daily", "exact"))
    r11 = pl.col("ts") == at(60)  # user 1, item 12, day C
    n = {
        k: _decoded(runs[k], frame.filter(r11), "user_all_count")[0]
        for k, frame in (("daily", daily), ("exact", exact))
    }
    # daily: user 1's events before day C (r0 r1 r3 r4 r7); exact: before hour 60 (and r8)
    assert n["daily"] == pytest.approx(math.log1p(5), abs=1e-5) and n["exact"] == pytest.approx(math.log1p(6), abs=1e-5)
    one_day = _decoded(runs["daily"], daily.filter(r11), "user_1d_count")[0]
    assert one_day == pytest.approx(math.log1p(2), abs=1e-5)  # [day C start - 1d, day C start): r4 r7
    prior, a = runs["daily"].spec.extras["task_priors"]["click"], 2.0  # smoothing of the hand-made config
    rate = _decoded(runs["daily"], daily.filter(r11), "user_all_click_rate")[0]
    assert rate == pytest.approx((4 + a * prior) / (5 + a), abs=1e-5)  # clicks r0 r3 r4 r7
    item = {k: _decoded(runs[k], f.filter(r11), "item_all_count")[0] for k, f in (("daily", daily), ("exact", exact))}
    assert item["daily"] == pytest.approx(math.log1p(2), abs=1e-5)  # item 12 before day C: r3 r5
    assert item["exact"] == pytest.approx(math.log1p(3), abs=1e-5)  # and r10
    # history lists, most recent first: encoded item ids as the examples' own `item` column has them
    enc = dict(zip(daily["item_id"].to_list(), daily["item"].to_list(), strict=True))
    assert daily.filter(r11)["clicked"].to_list() == [[enc[13], enc[10]]]  # clicks r7, r4 (max_len 2)
    assert daily.filter(r11)["liked"].to_list() == [[enc[13], enc[12]]]  # likes r7, r3
    assert exact.filter(r11)["liked"].to_list() == [[enc[11], enc[13], enc[12]]]  # r8 too
    # day A has nothing before it: every entity feature is that of an entity without history
    day_a = daily.filter(pl.col("ts") < at(DAYS["A"][1]))
    assert day_a.height == 4 and all(x == [] for x in day_a["clicked"].to_list())
    assert np.allclose(_decoded(runs["daily"], day_a, "user_all_count"), 0.0, atol=1e-5)
    # same-day rows share their features: r4 and r7 (user 1, day B) see the same user counts
    day_b_user1 = daily.filter((pl.col("user_id") == 1) & pl.col("ts").is_between(at(16), at(40), closed="left"))
    assert day_b_user1.height == 2 and day_b_user1.select(pl.col("^user_.*$")).n_unique() == 1


def test_exact_is_unchanged_and_the_specs_differ(runs: dict[str, EtlResult]) -> None:
    daily, exact, default = runs["daily"], runs["exact"], runs["default"]
    assert exact.summary["content_hash"] == default.summary["content_hash"]
    assert "freshness" not in exact.spec.extras and daily.spec.extras["freshness"] == "daily"
    assert daily.spec.hash != exact.spec.hash == default.spec.hash
    assert exact.summary["snapshot_cutoff"] == "2024-01-03T12:00:00.001Z"  # last event (hour 60) + 1 ms
    assert daily.summary["snapshot_cutoff"] == "2024-01-03T16:00:00.000Z"  # the end of its Shanghai day
    assert _examples(daily).height == _examples(exact).height == len(ROWS)


def test_day_floor_and_cutoff_follow_the_time_zone() -> None:
    ms = np.array([at(h).timestamp() * 1000 for h in (-8, -0.001, 15.999, 16, 39)], dtype=np.int64)
    expected = [at(h).timestamp() * 1000 for h in (-8, -8, -8, 16, 16)]
    assert day_floor_ms(ms, "Asia/Shanghai").tolist() == expected
    assert day_floor_ms(ms, "UTC").tolist() == [at(h).timestamp() * 1000 for h in (-24, -24, 0, 0, 24)]
    last = at(39)
    assert snapshot_cutoff(last, "daily", "Asia/Shanghai") == at(40)
    assert snapshot_cutoff(last, "exact", "Asia/Shanghai") == last + dt.timedelta(milliseconds=1)
    # a day with a DST change (America/New_York, 2024-03-10 has 23 hours): midnight to midnight
    ny = dt.datetime(2024, 3, 10, 12, tzinfo=dt.UTC)
    assert snapshot_cutoff(ny, "daily", "America/New_York") == dt.datetime(2024, 3, 11, 4, tzinfo=dt.UTC)
    floor = day_floor_ms(np.array([int(ny.timestamp() * 1000)]), "America/New_York")
    assert floor.tolist() == [int(dt.datetime(2024, 3, 10, 5, tzinfo=dt.UTC).timestamp() * 1000)]


def test_an_unknown_freshness_is_refused(app: typer.Typer, tmp_path: Path) -> None:
    """One line naming the file and the key, exit 2 (bad config), no traceback."""
    bad = tmp_path / "etl.yaml"
    bad.write_text(yaml.safe_dump({**_cfg(None).model_dump(mode="json"), "freshness": "hourly"}))
    source = _source(tmp_path / "log", ROWS)
    args = ["etl", "--source", "canonical", "--input", str(source), "--out", str(tmp_path / "o"), "--config", str(bad)]
    result = CliRunner().invoke(app, [*args, "--quiet"], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {bad}: freshness: must be one of 'exact' or 'daily', got 'hourly'"
