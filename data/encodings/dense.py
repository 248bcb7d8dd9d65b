"""Dense recipes: how a dense feature's value is computed from raw columns, and its normalisation.

One class per recipe kind (kept in the FeatureSpec JSON under ``extras["dense_recipes"]``, held in
memory by each :class:`data.spec.DenseFeature`), each with its Polars expression and its numpy
function; both give the same Float64 value for every input (``tests/data/test_encodings.py``):

* :class:`Log1pCount` (``log1p_count``): log(1 + c) of a point-in-time count;
* :class:`SmoothedRate` (``smoothed_rate``): (p + a r) / (n + a), additive (Bayesian average)
  smoothing towards the train-split task rate r, so an entity with no history gets exactly r
  (Micci-Barreca, "A preprocessing scheme for high-cardinality categorical attributes in
  classification and prediction problems", SIGKDD Explorations 2001);
* :class:`Value` (``value``): a numeric column, optionally log(1 + max(c, 0)).

Model inputs hold :func:`normalised_expr` / :func:`normalised_numpy`: Float32 ``(x - mean) / std``
with null or NaN x -> ``fill`` (the statistics are fitted on train rows, :mod:`data.etl.dense`).
``log1p`` in the numpy path gives Polars' bits (:func:`log1p_like_polars`; numpy's vectorised one may
differ in the last bit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import polars as pl

from aptrank.data.encodings.base import Column, Registry, Serialisable

POLARS_LOG1P_MIN_ROWS = 768
"""From this many values on, :func:`log1p_like_polars` calls Polars' vectorised ``log1p`` (a fixed
~30 us a call); below it the C library's ``math.log1p`` per element (~0.05 us each), which Polars
calls too: measured crossover 512-1024 values; an online request (100 candidates) stays on the
per-element path, the batch scorer's 16,384-row blocks take Polars'."""


def log1p_like_polars(values: np.ndarray) -> np.ndarray:
    """Elementwise log(1 + x) as Polars computes it (-inf at -1, NaN below -1 and for NaN), with the
    same bits as the expression: Polars' own ``log1p`` for large arrays, the C library's
    ``math.log1p`` (what Polars calls) per element for small ones (:data:`POLARS_LOG1P_MIN_ROWS`).
    numpy's vectorised ``log1p`` may differ from both in the last bit."""
    if len(values) >= POLARS_LOG1P_MIN_ROWS:
        return pl.Series(values, dtype=pl.Float64).log1p().to_numpy()
    try:
        return np.fromiter(map(math.log1p, values.tolist()), np.float64, len(values))
    except ValueError:  # math.log1p refuses x <= -1
        pass
    ok = values > -1.0
    out = np.full(len(values), np.nan)
    out[ok] = np.fromiter(map(math.log1p, values[ok].tolist()), np.float64, int(ok.sum()))
    out[values == -1.0] = -np.inf
    return out


class Recipe(Serialisable):
    """Base of the dense recipes: a Float64 value computed from the raw ``columns``."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Raw columns the recipe reads."""
        raise NotImplementedError

    def with_priors(self, priors: Mapping[str, float]) -> Self:
        """The recipe with its task prior set from the train-split task rates (if it has one)."""
        return self

    def polars_expr(self) -> pl.Expr:
        """Float64 value before normalisation."""
        raise NotImplementedError

    def numpy(self, columns: Mapping[str, Column]) -> Column:
        """float64 value before normalisation, equal to :meth:`polars_expr`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Log1pCount(Recipe):
    """log(1 + c) of a point-in-time count ``column``."""

    kind: ClassVar[str] = "log1p_count"
    column: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def polars_expr(self) -> pl.Expr:
        return pl.col(self.column).cast(pl.Float64).log1p()

    def numpy(self, columns: Mapping[str, Column]) -> Column:
        c = columns[self.column].as_float64()
        return Column(log1p_like_polars(c.values), c.valid)


@dataclass(frozen=True)
class SmoothedRate(Recipe):
    """(positives + smoothing x prior) / (count + smoothing): additive smoothing towards the task's
    train rate (Micci-Barreca, SIGKDD Explorations 2001)."""

    kind: ClassVar[str] = "smoothed_rate"
    positives: str
    count: str
    prior: float
    smoothing: float
    task: str | None = None
    """The task whose train rate is the prior (set by :meth:`with_priors`)."""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.positives, self.count)

    def with_priors(self, priors: Mapping[str, float]) -> Self:
        return dataclasses.replace(self, prior=priors[self.task]) if self.task is not None else self

    def polars_expr(self) -> pl.Expr:
        a, prior = float(self.smoothing), float(self.prior)
        p, n = pl.col(self.positives).cast(pl.Float64), pl.col(self.count).cast(pl.Float64)
        return (p + a * prior) / (n + a)

    def numpy(self, columns: Mapping[str, Column]) -> Column:
        a, prior = float(self.smoothing), float(self.prior)
        p, n = columns[self.positives].as_float64(), columns[self.count].as_float64()
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN, x/0 -> inf as in Polars
            return Column((p.values + a * prior) / (n.values + a), Column.valid_of(p, n))


@dataclass(frozen=True)
class Value(Recipe):
    """A numeric ``column`` as it is, or log(1 + max(c, 0)) with ``log1p``."""

    kind: ClassVar[str] = "value"
    column: str
    log1p: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def polars_expr(self) -> pl.Expr:
        v = pl.col(self.column).cast(pl.Float64)
        return v.clip(lower_bound=0.0).log1p() if self.log1p else v

    def numpy(self, columns: Mapping[str, Column]) -> Column:
        c = columns[self.column].as_float64()
        if not self.log1p:
            return c
        clipped = np.where(c.values < 0.0, 0.0, c.values)  # Polars' clip keeps -0.0 and NaN
        return Column(log1p_like_polars(clipped), c.valid)


def normalised_expr(x: pl.Expr, mean: float, std: float, fill: float) -> pl.Expr:
    """Float32 ``(x - mean) / std`` with null/NaN -> ``fill``."""
    return ((x - mean) / std).fill_nan(None).fill_null(fill).cast(pl.Float32)


def normalised_numpy(x: Column, mean: float, std: float, fill: float) -> np.ndarray:
    """float32 ``(x - mean) / std`` with null/NaN -> ``fill``, equal to :func:`normalised_expr`."""
    with np.errstate(invalid="ignore"):  # inf - inf -> NaN -> fill, as in Polars
        z = (x.values - mean) / std
    return np.where(x.mask(~np.isnan(z)), z, fill).astype(np.float32)


RECIPES: Registry[Recipe] = Registry("dense recipe", Log1pCount, SmoothedRate, Value)

__all__ = ["RECIPES", "Log1pCount", "Recipe", "SmoothedRate", "Value", "normalised_expr", "normalised_numpy"]
