"""The shipped real KuaiRand-Pure sample runs through the ETL; figures checked against the raw log.

Expected values are computed here from the raw log file with plain Polars on its own column names
(``is_click``, ``play_time_ms``, ``time_ms``, ...), independently of the adapter and the ETL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.etl.config import load_config
from aptrank.data.etl.run import EtlResult, example_files, run_etl
from aptrank.data.etl.splits import SPLITS
from aptrank.data.spec import FeatureSpec

LOG = "log_standard_2022-04-25_to_2022-04-30.parquet"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "etl" / "kuairand.yaml"


@pytest.fixture(scope="module")
def raw(kuairand_dir: Path) -> pl.DataFrame:
    log = pl.read_parquet(kuairand_dir / LOG)
    finish = (pl.col("play_time_ms") >= 0.95 * pl.col("duration_ms")) & (pl.col("duration_ms") > 0)
    day = pl.from_epoch("time_ms", time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Shanghai")
    return log.with_columns(finish.fill_null(False).cast(pl.Int8).alias("finish"), day.dt.date().alias("day"))


@pytest.fixture(scope="module")
def etl(kuairand_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EtlResult:
    return run_etl("kuairand", kuairand_dir, tmp_path_factory.mktemp("kr") / "out", load_config(CONFIG))


def test_rows_balance_and_rates(etl: EtlResult, raw: pl.DataFrame) -> None:
    s = etl.summary
    assert s["input_rows"] == raw.height == 94_784
    assert s["accepted_rows"] + s["rejected_rows"] == s["input_rows"]
    dupes = raw.height - raw.unique(["user_id", "video_id", "time_ms"]).height
    assert dupes == 2_979
    assert s["rejects_by_reason"]["duplicate_impression"] == dupes == s["rejected_rows"]
    assert s["validity_reject_rate"] == 0.0 < 0.005
    assert s["duplicate_rate"] == pytest.approx(dupes / raw.height) and s["gates"]["passed"]


def test_label_rates_match_raw_log(etl: EtlResult, raw: pl.DataFrame) -> None:
    # the whole raw log (no row is invalid, so accepted rows + duplicate copies = the raw log)
    whole = {"click": raw["is_click"].mean(), "like": raw["is_like"].mean(), "finish": raw["finish"].mean()}
    assert round(whole["click"], 3) == 0.438 and round(whole["like"], 3) == 0.017 and round(whole["finish"], 3) == 0.158
    assert etl.summary["label_rates_incl_duplicates"] == pytest.approx(whole, abs=1e-12)
    # accepted rows = the raw log without later copies of (user, item, ts)
    first = raw.unique(["user_id", "video_id", "time_ms"], keep="first", maintain_order=True)
    accepted = {"click": first["is_click"].mean(), "like": first["is_like"].mean(), "finish": first["finish"].mean()}
    assert etl.summary["label_rates"]["all"] == pytest.approx(accepted, abs=1e-12)
    missing = first.select((pl.col("duration_ms").is_null() | (pl.col("duration_ms") <= 0)).sum()).item()
    assert etl.summary["duration_missing_rows"] == missing


def test_splits_are_shanghai_days(etl: EtlResult, raw: pl.DataFrame) -> None:
    first = raw.unique(["user_id", "video_id", "time_ms"], keep="first", maintain_order=True)
    valid, test = dt.date(2022, 4, 29), dt.date(2022, 4, 30)
    expected = {
        "train": first.filter(pl.col("day") < valid).height,
        "valid": first.filter(pl.col("day") == valid).height,
        "test": first.filter(pl.col("day") == test).height,
    }
    assert {k: etl.summary["split_rows"][k] for k in SPLITS} == expected
    for split in SPLITS:
        part = pl.concat([pl.read_parquet(f) for f in example_files(etl.out_dir, split)])
        assert part.height == expected[split]
        rates = {t: part[f"label_{t}"].cast(pl.Float64).mean() for t in ("click", "like", "finish")}
        assert rates == pytest.approx(etl.summary["label_rates"][split], abs=1e-12)


def test_examples_follow_the_spec(etl: EtlResult) -> None:
    spec = FeatureSpec.read(etl.out_dir)
    test = pl.concat([pl.read_parquet(f) for f in example_files(etl.out_dir, "test")])
    assert test.columns == [
        "user_id",
        "item_id",
        "ts",
        *spec.feature_names(),
        "label_click",
        "label_like",
        "label_finish",
    ]
    assert test.null_count().sum_horizontal().item() == 0
    for f in spec.categorical:
        assert test[f.name].min() >= 0 and test[f.name].max() < f.num_embeddings, f.name
    for s in spec.sequence:
        lengths = test[s.name].list.len()
        assert lengths.max() <= s.max_len
        assert test[s.name].list.max().max() < s.num_embeddings
    dense = test.select(d.name for d in spec.dense).to_numpy()
    assert np.isfinite(dense).all()
    assert test["ts"].is_sorted()
    assert test["user_clicked_items"].list.len().mean() > 1.0, "test-day users have click histories"


def test_snapshot_covers_every_user_and_item(etl: EtlResult, kuairand_dir: Path) -> None:
    users = pl.read_parquet(etl.out_dir / "snapshot" / "users.parquet")
    items = pl.read_parquet(etl.out_dir / "snapshot" / "items.parquet")
    assert users.height == pl.read_parquet(kuairand_dir / "user_features_pure.parquet").height == 27_285
    assert items.height == 7_583 and users["user_id"].is_unique().all()
    # the snapshot counts every accepted event exactly once
    assert users["user_all_n"].sum() == etl.summary["accepted_rows"]
    assert items["item_all_click_pos"].sum() == round(
        etl.summary["label_rates"]["all"]["click"] * etl.summary["accepted_rows"]
    )
