"""Metrics against brute-force definitions on fixed data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from aptrank.pipeline.ranking_metrics import auc, calibration, delta_m, gauc, logloss


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    assert auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert math.isnan(auc(np.ones(5), np.arange(5.0)))


def test_gauc_is_impression_weighted_over_users_with_both_classes() -> None:
    users = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    y = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1])  # user 2 has one class only
    s = np.array([0.9, 0.2, 0.95, 0.5, 0.6, 0.3, 0.2, 0.1, 0.8])
    a1 = brute_auc(y[:3], s[:3])
    a3 = brute_auc(y[5:], s[5:])
    assert gauc(y, s, users) == pytest.approx((3 * a1 + 4 * a3) / 7)


def test_logloss_and_calibration() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.3, 0.6, 0.1])
    expected = -np.mean([math.log(0.8), math.log(0.7), math.log(0.6), math.log(0.9)])
    assert logloss(y, p) == pytest.approx(expected)
    assert calibration(y, p) == pytest.approx(0.45 / 0.5)


def test_delta_m_signs() -> None:
    base = {"click": {"auc": 0.70, "logloss": 0.50}, "like": {"auc": 0.80, "logloss": 0.10}}
    model = {"click": {"auc": 0.77, "logloss": 0.45}, "like": {"auc": 0.72, "logloss": 0.11}}
    assert delta_m(model, base, ("auc",)) == pytest.approx(((0.07 / 0.70) - (0.08 / 0.80)) / 2 * 100)
    assert delta_m(model, base, ("logloss",)) == pytest.approx(((0.05 / 0.50) - (0.01 / 0.10)) / 2 * 100)
