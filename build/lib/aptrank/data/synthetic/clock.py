"""When impressions happen: a weekly pattern over days and a time-of-day pattern within a day.

The hourly profile is a stylised feed-app curve (trough before dawn, lunch and evening peaks) whose
peak-to-mean ratio (~1.6) matches the hourly counts of the KuaiRand-Pure log (Gao et al., CIKM 2022).
Timestamps are drawn by inverse-CDF sampling of that piecewise-constant density, one time stratum
per chunk (stratified sampling: chunk j covers the quantile range of its share of the day's rows),
so a day's rows come out sorted. Within a day they are made *strictly* increasing at millisecond
resolution (t_i = max(draw_i, t_{i-1} + 1)), which guarantees that no two generated events share a
(user, item, ts) key: the only duplicates in a log are the ones injected on purpose.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

DAY_MS = 86_400_000

HOURLY_WEIGHTS: tuple[float, ...] = (
    0.45, 0.30, 0.22, 0.18, 0.20, 0.30, 0.55, 0.80, 0.95, 1.00, 1.05, 1.15,
    1.35, 1.30, 1.10, 1.05, 1.10, 1.20, 1.40, 1.60, 1.70, 1.65, 1.25, 0.80,
)  # fmt: skip
"""Relative traffic per UTC hour 0..23."""

WEEKDAY_WEIGHTS: tuple[float, ...] = (1.00, 0.97, 0.98, 1.00, 1.06, 1.18, 1.15)
"""Relative traffic Monday..Sunday (weekend bump)."""

_KNOTS_X = np.linspace(0.0, 1.0, len(HOURLY_WEIGHTS) + 1)
_KNOTS_CDF = np.concatenate([[0.0], np.cumsum(HOURLY_WEIGHTS) / np.sum(HOURLY_WEIGHTS)])


def epoch_ms(day: dt.date) -> int:
    """Milliseconds since the Unix epoch at 00:00 UTC of ``day``."""
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def day_weights(start: dt.date, days: int) -> np.ndarray:
    """Relative traffic of each of ``days`` consecutive days from ``start`` (weekday pattern)."""
    return np.array([WEEKDAY_WEIGHTS[(start + dt.timedelta(days=d)).weekday()] for d in range(days)])


def split_evenly(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder)."""
    exact = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def intraday_quantile(u: np.ndarray) -> np.ndarray:
    """Inverse CDF of the hourly profile: day fraction in [0, 1) at cumulative probability ``u``."""
    return np.interp(u, _KNOTS_CDF, _KNOTS_X)


def stratum_timestamps(
    rng: np.random.Generator, n: int, lo: float, hi: float, day_start_ms: int, after_ms: int
) -> np.ndarray:
    """``n`` strictly increasing epoch-ms timestamps of one day, all > ``after_ms``, drawn from the
    hourly profile restricted to the probability stratum [lo, hi)."""
    u = lo + (hi - lo) * np.sort(rng.random(n))
    ms = day_start_ms + np.minimum(np.floor(intraday_quantile(u) * DAY_MS).astype(np.int64), DAY_MS - 1)
    shifted = ms - np.arange(n, dtype=np.int64)
    ts = np.maximum.accumulate(np.maximum(shifted, after_ms + 1)) + np.arange(n, dtype=np.int64)
    if n and ts[-1] >= day_start_ms + DAY_MS:
        raise RuntimeError(f"too many events in one day to keep timestamps strictly increasing ({n} in a stratum)")
    return ts
