"""The numpy request-side features (:mod:`serving.request_side`) equal the ETL lookup's, and the
scorer falls back to the ETL lookup where they do not apply or differ."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.etl.encode import HOUR, WEEKDAY, derived_exprs
from aptrank.data.spec import INPUT_NAMES
from aptrank.data.tensors import model_inputs
from aptrank.serving.features import CandidateFeatures
from aptrank.serving.request_side import Raw, derived_columns

ZONES = ("Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu")


@pytest.fixture(scope="module")
def features(etl_dir: Path) -> CandidateFeatures:
    return CandidateFeatures(etl_dir)


@pytest.mark.parametrize("zone", ZONES)
def test_hour_and_weekday_match_polars_across_clock_changes(zone: str) -> None:
    """Every 7 minutes over two years (both clock changes of each year, half-hour DST in Lord Howe,
    a +5:45 offset in Kathmandu), plus single timestamps far apart (the sorted-hours path)."""
    grid = np.arange(1_640_995_200_000, 1_704_067_200_000, 7 * 60_000 + 13, dtype=np.int64)
    far = np.array([0, 86_399_999, 1_000_000_000_000, 1_900_000_000_000], dtype=np.int64)
    for ts in (grid, far, grid[:1]):
        fns = derived_columns([HOUR, WEEKDAY], zone)
        raw: dict[str, Raw] = {"ts": Raw(ts)}
        for name, fn in fns.items():
            raw[name] = fn(raw)
        expected = pl.DataFrame({"ts": pl.Series(ts).cast(pl.Datetime("ms", "UTC"))}).select(
            derived_exprs(zone, [HOUR, WEEKDAY])
        )
        assert np.array_equal(raw[HOUR].values, expected[HOUR].to_numpy())
        assert np.array_equal(raw[WEEKDAY].values, expected[WEEKDAY].to_numpy())


def _etl_arrays(features: CandidateFeatures, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return model_inputs(features.lookup.build(frame).frame, features.spec)


def test_numpy_request_side_equals_the_etl_lookup(features: CandidateFeatures) -> None:
    assert features.request_encoder is not None  # the demo ETL's request-side features are all handled
    frame = features.probe(2048)  # a year of timestamps; every tab value, an unseen one and null
    assert frame["tab"].null_count() > 0
    got, expected = features.encode(frame), _etl_arrays(features, frame)
    for name in INPUT_NAMES:
        assert np.array_equal(got.arrays[name], expected[name]), name


def test_integer_ts_and_single_rows(features: CandidateFeatures) -> None:
    frame = features.probe(64).with_columns(pl.col("ts").dt.epoch("ms"))
    expected = _etl_arrays(features, frame)
    for i in (0, 31, 63):
        one = features.encode(frame.slice(i, 1))
        for name in INPUT_NAMES:
            assert np.array_equal(one.arrays[name][0], expected[name][i]), name


def test_other_context_types_fall_back_to_the_etl_lookup(features: CandidateFeatures) -> None:
    frame = features.probe(64)
    as_text = frame.with_columns(pl.col("tab").cast(pl.String))  # the ETL's cast reads "3" as 3
    got, expected = features.encode(as_text), _etl_arrays(features, as_text)
    for name in INPUT_NAMES:
        assert np.array_equal(got.arrays[name], expected[name]), name


def test_a_divergent_numpy_path_is_not_used(etl_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = CandidateFeatures(etl_dir, self_check=False)
    assert broken.request_encoder is not None
    derived = dict(broken.request_encoder.derived)
    derived[HOUR] = lambda raw: Raw((raw["ts"].values // 3_600_000) % 24)  # UTC hour: wrong in Asia/Shanghai
    broken.request_encoder = dataclasses.replace(broken.request_encoder, derived=derived)
    with caplog.at_level(logging.WARNING, logger="aptrank.serve"):
        broken.check_request_encoder()
    assert broken.request_encoder is None
    assert "differ from the ETL lookup on 'categorical'" in caplog.text
    broken.check_against_full_lookup()  # the ETL lookup now serves the request side
