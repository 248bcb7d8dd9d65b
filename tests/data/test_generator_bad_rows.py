"""Injected bad rows: recounted from the files by an independent rule check, every kind matches
the manifest exactly and every row breaks at most one rule (exactly one for the bad ones)."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import polars as pl
import pytest

from aptrank.data.synthetic import BAD_KINDS, GeneratorConfig, generate
from aptrank.data.synthetic.bad_rows import bad_totals
from aptrank.data.synthetic.generator import STREAM_PLAN, stream_rng
from aptrank.data.synthetic.plan import make_plan

# a small world (many repeated (user, item) pairs) stresses the one-reason guarantees
CFG = GeneratorConfig(users=60, items=40, events=40_000, days=2, seed=11, bad_rows=0.2, chunk_size=3_000)
START = dt.datetime(2022, 4, 8, tzinfo=dt.UTC)
END = START + dt.timedelta(days=CFG.days)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, dict]:
    out = tmp_path_factory.mktemp("bad")
    generate(out, CFG)
    events = pl.read_parquet(sorted((out / "events").rglob("*.parquet")))
    known = pl.read_parquet(out / "items.parquet")["item_id"]
    key = ["user_id", "item_id", "ts"]
    flags = events.with_columns(
        null_key=pl.col("user_id").is_null() | pl.col("item_id").is_null(),
        malformed_key=(pl.col("user_id") < 0) | (pl.col("item_id") < 0),
        null_ts=pl.col("ts").is_null(),
        ts_out_of_range=(pl.col("ts") < START) | (pl.col("ts") >= END),
        label_not_binary=~pl.col("click").is_in([0, 1]) | ~pl.col("like").is_in([0, 1]),
        negative_watch=pl.col("watch_ms") < 0,
        # nulls compare equal here on purpose: a null-tolerant dedup must not see extra repeats
        unknown_item=pl.col("item_id").is_not_null() & ~pl.col("item_id").is_in(known.implode()),
        duplicate_impression=pl.int_range(pl.len()).over(key) > 0,
    ).with_columns(pl.col(k.value).fill_null(False) for k in BAD_KINDS)
    return flags, json.loads((out / "manifest.json").read_text())


def test_every_kind_is_injected_and_recounts_exactly(checked: tuple[pl.DataFrame, dict]) -> None:
    flags, manifest = checked
    recount = {k.value: int(flags[k.value].sum()) for k in BAD_KINDS}
    assert recount == manifest["bad_rows"]
    assert sum(recount.values()) == round(0.2 * 40_000)
    assert min(recount.values()) == 1_000  # 8000 split evenly over 8 kinds
    assert flags.height == manifest["rows"]["events"] == 40_000


def test_each_row_breaks_at_most_one_rule(checked: tuple[pl.DataFrame, dict]) -> None:
    flags, manifest = checked
    reasons = flags.select(pl.sum_horizontal(k.value for k in BAD_KINDS).alias("n"))["n"]
    assert reasons.max() == 1
    assert int((reasons == 0).sum()) == manifest["rows"]["clean_events"] == 32_000


def test_duplicates_are_exact_copies_of_clean_rows(checked: tuple[pl.DataFrame, dict]) -> None:
    flags, manifest = checked
    events = flags.select("user_id", "item_id", "ts", "click", "like", "watch_ms", "tab")
    assert events.height - events.unique().height == manifest["bad_rows"]["duplicate_impression"]
    copies = flags.filter("duplicate_impression").select(events.columns)
    originals = flags.filter(pl.sum_horizontal(k.value for k in BAD_KINDS) == 0).select(events.columns)
    assert copies.join(originals, on=events.columns, how="anti", nulls_equal=True).height == 0


def test_variants_are_counted(checked: tuple[pl.DataFrame, dict]) -> None:
    flags, manifest = checked
    variants = manifest["bad_row_variants"]
    assert variants["null_key.user_id"] == flags["user_id"].null_count()
    assert variants["null_key.item_id"] == flags["item_id"].null_count()
    assert variants["ts_out_of_range.1970"] == int((flags["ts"].dt.year() == 1970).sum())
    assert variants["ts_out_of_range.2100"] == int((flags["ts"].dt.year() == 2100).sum())
    assert variants["label_not_binary.click"] == int((~flags["click"].is_in([0, 1])).sum())
    assert variants["label_not_binary.like"] == int((~flags["like"].is_in([0, 1])).sum())


def test_bad_totals_split_evenly() -> None:
    assert bad_totals(1_003, 0.1).tolist() == [13, 13, 13, 13, 12, 12, 12, 12]
    assert bad_totals(1_000, 0.0).sum() == 0


@pytest.mark.parametrize(
    "cfg",
    [
        GeneratorConfig(events=123_457, days=5, bad_rows=0.5, chunk_size=7_000, rows_per_part=20_000),
        GeneratorConfig(events=9, days=4, bad_rows=0.5, chunk_size=1),
        GeneratorConfig(events=50_000, days=1, bad_rows=0.013, chunk_size=50_000),
    ],
)
def test_plan_rows_and_quotas_add_up(cfg: GeneratorConfig) -> None:
    plan = make_plan(cfg, stream_rng(cfg.seed, STREAM_PLAN))
    assert sum(c.rows for c in plan) == cfg.events
    quotas = np.sum([c.quota for c in plan], axis=0)
    assert quotas.tolist() == bad_totals(cfg.events, cfg.bad_rows).tolist()
    assert all(c.base_rows <= cfg.chunk_size and c.quota.sum() <= c.base_rows for c in plan)
    for day in {c.day for c in plan}:
        strata = [c.stratum for c in plan if c.day == day]
        assert strata[0][0] == 0.0 and strata[-1][1] == 1.0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(strata))
