"""Dense features: how each is computed from raw columns, and its train-split normalisation.

A recipe (kept in the FeatureSpec's ``extras["dense_recipes"]``) is one of:

* ``{"kind": "log1p_count", "column": c}``: log(1 + c) of a point-in-time count;
* ``{"kind": "smoothed_rate", "positives": p, "count": n, "prior": r, "smoothing": a}``:
  (p + a r) / (n + a), additive (Bayesian average) smoothing towards the train-split task rate r,
  so an entity with no history gets exactly r (e.g. Micci-Barreca, "A preprocessing scheme for
  high-cardinality categorical attributes", SIGKDD Explorations 2001);
* ``{"kind": "value", "column": c, "log1p": bool}``: a numeric column, optionally log(1 + max(c, 0)).

Examples hold ``(x - mean) / std`` as Float32, with mean and std (population) from train rows only;
null or NaN x becomes ``fill`` (0.0: the train mean). Statistics are rounded to 10 significant
digits so that they do not depend on the summation order of parallel reductions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from aptrank.data.spec import DenseFeature, SpecError

Recipe = dict[str, Any]


def log1p_count(column: str) -> Recipe:
    return {"kind": "log1p_count", "column": column}


def smoothed_rate(positives: str, count: str, prior: float, smoothing: float) -> Recipe:
    return {"kind": "smoothed_rate", "positives": positives, "count": count, "prior": prior, "smoothing": smoothing}


def value(column: str, log1p: bool = False) -> Recipe:
    return {"kind": "value", "column": column, "log1p": log1p}


def raw_value(recipe: Recipe) -> pl.Expr:
    """Float64 value of a recipe before normalisation."""
    kind = recipe["kind"]
    if kind == "log1p_count":
        return pl.col(recipe["column"]).cast(pl.Float64).log1p()
    if kind == "smoothed_rate":
        a, prior = float(recipe["smoothing"]), float(recipe["prior"])
        p, n = pl.col(recipe["positives"]).cast(pl.Float64), pl.col(recipe["count"]).cast(pl.Float64)
        return (p + a * prior) / (n + a)
    if kind == "value":
        v = pl.col(recipe["column"]).cast(pl.Float64)
        return v.clip(lower_bound=0.0).log1p() if recipe.get("log1p") else v
    raise SpecError(f"unknown dense recipe kind '{kind}'")


def recipe_columns(recipe: Recipe) -> list[str]:
    """Raw columns a recipe reads."""
    keys = ("positives", "count") if recipe["kind"] == "smoothed_rate" else ("column",)
    return [recipe[k] for k in keys]


def normalized(feature: DenseFeature, recipe: Recipe) -> pl.Expr:
    """Float32 ``(x - mean) / std`` with null/NaN -> ``fill``, named after the feature."""
    x = (raw_value(recipe) - feature.mean) / feature.std
    return x.fill_nan(None).fill_null(feature.fill).cast(pl.Float32).alias(feature.name)


def fit(chunks: Iterable[pl.DataFrame | pl.LazyFrame], recipes: Mapping[str, Recipe]) -> dict[str, tuple[float, float]]:
    """Mean and population std of each recipe's value over all rows of ``chunks`` (train rows, in a
    fixed order). Per-chunk moments are merged with the pairwise update of Chan, Golub & LeVeque
    ("Updating formulae and a pairwise algorithm for computing sample variances", 1979)."""
    moments = {name: (0, 0.0, 0.0) for name in recipes}
    for chunk in chunks:
        exprs = []
        for name, r in recipes.items():
            v = raw_value(r).fill_nan(None)
            exprs += [v.count().alias(f"{name}.n"), v.mean().alias(f"{name}.mean"), v.var(ddof=0).alias(f"{name}.var")]
        row = chunk.lazy().select(exprs).collect().row(0, named=True)
        for name in recipes:
            n_b = int(row[f"{name}.n"])
            if n_b:
                chunk_moments = (n_b, float(row[f"{name}.mean"]), float(row[f"{name}.var"]) * n_b)
                moments[name] = _merge(moments[name], chunk_moments)
    out = {}
    for name, (n, mean, m2) in moments.items():
        std = (m2 / n) ** 0.5 if n else 0.0
        out[name] = (_round(mean) if n else 0.0, _round(std) if std > 1e-12 else 1.0)
    return out


def _merge(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _round(x: float) -> float:
    return float(f"{x:.10g}")
