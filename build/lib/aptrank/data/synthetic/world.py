"""The latent world behind a synthetic log: users, items, their factors and the task geometry.

* item popularity: Zipf, weight of the item of popularity rank r proportional to r^-zipf
  (ranks are a random permutation of items);
* user activity: log-normal weights exp(N(0, activity_sigma^2)) (heavy-tailed activity skew);
* factors: item factors mix a category centroid with noise, user factors an age-bucket centroid
  with noise (both N(0, 1) per coordinate), so side attributes carry signal;
* durations: log-normal, median 60 s, clipped to [3 s, 10 min] (KuaiRand-Pure's duration median is
  ~71 s with a long right tail);
* task logits: intercept_k + signal * z_k + tab_k with z_k = sqrt(0.6) a_k + sqrt(0.2) user_k +
  sqrt(0.2) item_k (see :mod:`data.synthetic.tasks`).

Sampling uses precomputed cumulative weights and ``searchsorted`` (inverse-CDF sampling).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from aptrank.data.synthetic import tasks
from aptrank.data.synthetic.clock import DAY_MS, epoch_ms
from aptrank.data.synthetic.config import GeneratorConfig

AGE_BUCKETS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
AGE_WEIGHTS = np.array([0.08, 0.27, 0.30, 0.18, 0.10, 0.07])
GENDERS: tuple[str, ...] = ("female", "male", "unknown")
GENDER_WEIGHTS = np.array([0.46, 0.46, 0.08])
ACTIVITY_LEVELS: tuple[str, ...] = ("low", "medium", "high", "very_high")
CENTROID_SHARE = 0.5  # share of a factor's variance from its group centroid
CATEGORY_SKEW = 0.7  # category k has weight (k + 1)^-0.7
TAB_DECAY = 0.8  # tab t has weight exp(-0.8 t) (KuaiRand: one dominant tab, a long tail)
DURATION_MEDIAN_MS = 60_000.0
DURATION_SIGMA = 1.0
DURATION_RANGE_MS = (3_000, 600_000)
ITEMS_PER_AUTHOR = 8
UPLOAD_WINDOW_DAYS = 90  # items are uploaded in the 90 days before the log starts
CALIBRATION_SAMPLE = 200_000


@dataclass(frozen=True)
class World:
    """Everything the event sampler needs, fixed for a whole run."""

    user_factors: np.ndarray  # (N, F) float32
    user_offsets: np.ndarray  # (N, K) float32
    user_cdf: np.ndarray  # (N,) cumulative activity weights
    item_factors: np.ndarray  # (M, F) float32
    item_offsets: np.ndarray  # (M, K) float32
    item_cdf: np.ndarray  # (M,) cumulative popularity weights
    duration_ms: np.ndarray  # (M,) int64
    tab_cdf: np.ndarray  # (T,)
    tab_offsets: np.ndarray  # (T, K) float64
    directions: np.ndarray  # (K, F) float32
    signal: float
    intercepts: np.ndarray  # (K,) float64, calibrated
    items: pa.Table
    users: pa.Table

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` impressions' (user index, item index, tab) drawn from activity x popularity x tabs."""
        return (
            sample_cdf(rng, self.user_cdf, n),
            sample_cdf(rng, self.item_cdf, n),
            sample_cdf(rng, self.tab_cdf, n),
        )

    def scores(self, users: np.ndarray, items: np.ndarray, tabs: np.ndarray) -> np.ndarray:
        """(n, K) task logits without intercepts: signal * z + tab offset."""
        prod = self.user_factors[users] * self.item_factors[items]
        shares = np.sqrt(tasks.VARIANCE_SHARES).astype(np.float32)
        z = (
            shares[0] * np.einsum("nf,kf->nk", prod, self.directions)
            + shares[1] * self.user_offsets[users]
            + shares[2] * self.item_offsets[items]
        )
        return self.signal * z.astype(np.float64) + self.tab_offsets[tabs]

    def probabilities(self, users: np.ndarray, items: np.ndarray, tabs: np.ndarray) -> np.ndarray:
        """(n, K) true label probabilities (click, like, finish)."""
        return tasks.sigmoid(self.intercepts + self.scores(users, items, tabs))


def sample_cdf(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Indices drawn with probability proportional to the increments of the cumulative ``cdf``."""
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(idx, len(cdf) - 1)


def _mixed_factors(rng: np.random.Generator, groups: np.ndarray, n_groups: int, factors: int) -> np.ndarray:
    centroids = rng.standard_normal((n_groups, factors))
    noise = rng.standard_normal((len(groups), factors))
    mixed = np.sqrt(CENTROID_SHARE) * centroids[groups] + np.sqrt(1.0 - CENTROID_SHARE) * noise
    return mixed.astype(np.float32)


def _zipf_cdf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    ranks = rng.permutation(n) + 1.0
    return np.cumsum(ranks**-exponent)


def build_world(cfg: GeneratorConfig, rng: np.random.Generator, calibration_rng: np.random.Generator) -> World:
    """Draw the world of ``cfg`` from ``rng`` and calibrate the task intercepts on a sample of
    impressions drawn from ``calibration_rng``."""
    basis = tasks.task_basis(cfg.task_correlation, cfg.like_alignment)
    directions = tasks.task_directions(rng, cfg.task_correlation, cfg.like_alignment, cfg.factors)

    ages = sample_cdf(rng, np.cumsum(AGE_WEIGHTS), cfg.users)
    user_factors = _mixed_factors(rng, ages, len(AGE_BUCKETS), cfg.factors)
    user_offsets = tasks.correlated_offsets(rng, cfg.users, basis)
    activity = np.exp(cfg.activity_sigma * rng.standard_normal(cfg.users))
    genders = sample_cdf(rng, np.cumsum(GENDER_WEIGHTS), cfg.users)
    signup_days = rng.integers(1, 3 * 365, cfg.users)

    category_weights = 1.0 / np.arange(1, cfg.categories + 1) ** CATEGORY_SKEW
    categories = sample_cdf(rng, np.cumsum(category_weights), cfg.items)
    item_factors = _mixed_factors(rng, categories, cfg.categories, cfg.factors)
    item_offsets = tasks.correlated_offsets(rng, cfg.items, basis)
    item_cdf = _zipf_cdf(rng, cfg.items, cfg.zipf)
    duration = DURATION_MEDIAN_MS * np.exp(DURATION_SIGMA * rng.standard_normal(cfg.items))
    durations = np.round(np.clip(duration, *DURATION_RANGE_MS)).astype(np.int64)
    authors = rng.integers(0, max(1, cfg.items // ITEMS_PER_AUTHOR), cfg.items)
    upload = epoch_ms(cfg.start_date) - rng.integers(1, UPLOAD_WINDOW_DAYS * DAY_MS, cfg.items)

    tab_cdf = np.cumsum(np.exp(-TAB_DECAY * np.arange(cfg.tabs)))
    tab_offsets = tasks.TAB_SCALE * tasks.correlated_offsets(rng, cfg.tabs, basis).astype(np.float64)

    world = World(
        user_factors=user_factors,
        user_offsets=user_offsets,
        user_cdf=np.cumsum(activity),
        item_factors=item_factors,
        item_offsets=item_offsets,
        item_cdf=item_cdf,
        duration_ms=durations,
        tab_cdf=tab_cdf,
        tab_offsets=tab_offsets,
        directions=directions,
        signal=cfg.signal,
        intercepts=np.zeros(tasks.K),
        items=_items_table(categories, cfg.categories, authors, durations, upload),
        users=_users_table(ages, genders, activity, signup_days),
    )
    sample = world.sample(calibration_rng, CALIBRATION_SAMPLE)
    targets = np.array([cfg.click_rate, cfg.like_rate, cfg.finish_rate])
    return replace(world, intercepts=tasks.calibrate_intercepts(world.scores(*sample), targets))


def _items_table(
    categories: np.ndarray, n_categories: int, authors: np.ndarray, duration: np.ndarray, upload: np.ndarray
) -> pa.Table:
    names = np.array([f"cat_{c:03d}" for c in range(n_categories)], dtype=object)
    return pa.table(
        {
            "item_id": pa.array(np.arange(len(categories), dtype=np.int64)),
            "author_id": pa.array(authors.astype(np.int64)),
            "duration_ms": pa.array(duration),
            "category": pa.array(names[categories], type=pa.string()),
            "upload_ts": pa.array(upload.astype(np.int64), type=pa.timestamp("ms", tz="UTC")),
        }
    )


def _users_table(ages: np.ndarray, genders: np.ndarray, activity: np.ndarray, signup_days: np.ndarray) -> pa.Table:
    quartile = np.searchsorted(np.quantile(activity, [0.25, 0.5, 0.75]), activity, side="right")
    return pa.table(
        {
            "user_id": pa.array(np.arange(len(ages), dtype=np.int64)),
            "age_bucket": pa.array(np.array(AGE_BUCKETS, dtype=object)[ages], type=pa.string()),
            "gender": pa.array(np.array(GENDERS, dtype=object)[genders], type=pa.string()),
            "activity_level": pa.array(np.array(ACTIVITY_LEVELS, dtype=object)[quartile], type=pa.string()),
            "signup_days": pa.array(signup_days.astype(np.int64)),
        }
    )
