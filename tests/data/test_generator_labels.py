"""Labels: default rates near KuaiRand's on 1M events, custom rates honoured, labels drawn from the
written true probabilities, watch time consistent with the finish rule, calibration solver exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import brentq

from aptrank.data.synthetic import GeneratorConfig, generate
from aptrank.data.synthetic.events import watch_times
from aptrank.data.synthetic.tasks import calibrate_intercepts, sigmoid


def _labelled(out: Path, finish_ratio: float = 0.95) -> pl.DataFrame:
    """Events with the finish label as the ETL defines it (watch_ms >= finish_ratio * duration_ms)."""
    items = pl.read_parquet(out / "items.parquet").select("item_id", "duration_ms")
    return (
        pl.read_parquet(sorted((out / "events").rglob("*.parquet")))
        .join(items, on="item_id", how="left")
        .with_columns(finish=(pl.col("watch_ms") >= finish_ratio * pl.col("duration_ms")).cast(pl.Int8))
    )


def _rates(frame: pl.DataFrame) -> dict[str, float]:
    return {task: float(frame[task].mean()) for task in ("click", "like", "finish")}


def test_default_rates_within_10_percent_on_1m_events(tmp_path: Path) -> None:
    cfg = GeneratorConfig(events=1_000_000, seed=1)
    manifest = generate(tmp_path, cfg)
    rates = _rates(_labelled(tmp_path))
    targets = {"click": 0.44, "like": 0.017, "finish": 0.16}
    for task, target in targets.items():
        assert abs(rates[task] - target) / target < 0.10, (task, rates[task])
        assert manifest["label_rates"][task]["observed_clean"] == pytest.approx(rates[task], abs=1e-12)
    assert json.loads((tmp_path / "manifest.json").read_text())["label_rates"] == manifest["label_rates"]


def test_custom_rates_are_honoured(tmp_path: Path) -> None:
    cfg = GeneratorConfig(
        users=3_000,
        items=2_000,
        events=200_000,
        seed=2,
        click_rate=0.2,
        like_rate=0.05,
        finish_rate=0.4,
        finish_ratio=0.8,
    )
    generate(tmp_path, cfg)
    rates = _rates(_labelled(tmp_path, finish_ratio=0.8))
    for task, target in {"click": 0.2, "like": 0.05, "finish": 0.4}.items():
        assert abs(rates[task] - target) / target < 0.10, (task, rates[task])


def test_labels_follow_the_written_probabilities(tmp_path: Path) -> None:
    generate(tmp_path, GeneratorConfig(users=3_000, items=2_000, events=200_000, seed=3, truth=True))
    events = _labelled(tmp_path)
    for task in ("click", "like", "finish"):
        p = events[f"p_{task}"].to_numpy().astype(np.float64)
        y = events[task].to_numpy()
        bins = np.quantile(p, np.linspace(0, 1, 11))
        which = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
        for b in range(10):
            pb, yb = p[which == b], y[which == b]
            se = np.sqrt(max(pb.mean() * (1 - pb.mean()), 1e-6) / len(pb))
            assert abs(yb.mean() - pb.mean()) < 4.5 * se + 1e-4, (task, b, yb.mean(), pb.mean())
        # the probabilities carry signal: top decile far above the bottom one
        assert y[which == 9].mean() > 3 * y[which == 0].mean()


def test_watch_times_realise_the_finish_rule() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    duration = np.concatenate([rng.integers(3_000, 600_000, n - 4), [20_000, 20_000, 3_000, 3_001]])
    finish = rng.random(n) < 0.3
    finish[-4:] = [True, False, True, False]
    p = rng.random(n)
    for ratio in (0.95, 0.5, 0.9):
        watch = watch_times(rng, duration, finish, p, ratio)
        assert (watch >= 0).all()
        assert np.array_equal(watch >= ratio * duration, finish)
    replays = watch[finish] > duration[finish]
    assert 0.15 < replays.mean() < 0.25  # 20% of finished views are replays


def test_calibrated_intercepts_match_a_root_finder() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((50_000, 3)) * np.array([1.0, 2.0, 0.5])
    targets = np.array([0.44, 0.017, 0.16])
    got = calibrate_intercepts(scores, targets)
    for k in range(3):
        want = brentq(lambda b, k=k: sigmoid(b + scores[:, k]).mean() - targets[k], -30, 30, xtol=1e-14)
        assert got[k] == pytest.approx(want, abs=1e-9)
