"""The latent world and the clock: Zipf popularity, log-normal activity, the hourly profile,
strictly increasing timestamps and exact splitting of row counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aptrank.data.synthetic import GeneratorConfig
from aptrank.data.synthetic.clock import (
    DAY_MS,
    HOURLY_WEIGHTS,
    epoch_ms,
    intraday_quantile,
    split_evenly,
    stratum_timestamps,
)
from aptrank.data.synthetic.generator import STREAM_CALIBRATION, STREAM_WORLD, stream_rng
from aptrank.data.synthetic.world import World, build_world, sample_cdf


def _world(**kw: Any) -> World:
    cfg = GeneratorConfig(**kw)
    return build_world(cfg, stream_rng(cfg.seed, STREAM_WORLD), stream_rng(cfg.seed, STREAM_CALIBRATION))


@pytest.mark.parametrize("zipf", [0.6, 1.0])
def test_item_popularity_is_zipf(zipf: float) -> None:
    world = _world(users=100, items=5_000, zipf=zipf)
    counts = np.bincount(sample_cdf(np.random.default_rng(0), world.item_cdf, 3_000_000), minlength=5_000)
    ranked = np.sort(counts)[::-1][:200]
    slope = np.polyfit(np.log(np.arange(1, 201)), np.log(ranked), 1)[0]
    assert slope == pytest.approx(-zipf, abs=0.05)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.0])
def test_user_activity_is_log_normal(sigma: float) -> None:
    world = _world(users=20_000, items=100, activity_sigma=sigma)
    weights = np.diff(world.user_cdf, prepend=0.0)
    assert np.log(weights).std() == pytest.approx(sigma, abs=0.03)


def test_time_of_day_follows_the_hourly_profile() -> None:
    hours = np.floor(intraday_quantile(np.random.default_rng(0).random(1_000_000)) * 24).astype(int)
    share = np.bincount(hours, minlength=24) / 1_000_000
    np.testing.assert_allclose(share, np.array(HOURLY_WEIGHTS) / sum(HOURLY_WEIGHTS), atol=0.002)


def test_dense_timestamps_stay_strictly_increasing() -> None:
    day0 = epoch_ms(GeneratorConfig().start_date)
    after = day0 + 43_200_000
    # 100k draws in a stratum only seconds wide: the draws collide and get pushed apart
    ts = stratum_timestamps(np.random.default_rng(0), 100_000, 0.5, 0.5001, day0, after)
    assert ts[0] > after and (np.diff(ts) > 0).all() and ts[-1] < day0 + DAY_MS
    with pytest.raises(RuntimeError, match="strictly increasing"):
        stratum_timestamps(np.random.default_rng(0), 20, 0.99, 1.0, day0, day0 + DAY_MS - 10)


def test_split_evenly_is_exact_and_proportional() -> None:
    counts = split_evenly(1_000_003, np.array([1.0, 2.0, 3.0, 4.0]))
    assert counts.sum() == 1_000_003
    np.testing.assert_allclose(counts, 1_000_003 * np.array([0.1, 0.2, 0.3, 0.4]), atol=1)
    assert split_evenly(2, np.ones(5)).tolist() == [1, 1, 0, 0, 0]
