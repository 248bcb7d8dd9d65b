"""Dense feature statistics: each recipe's train-split mean and population std.

The recipes themselves (how a dense value is computed, and its normalisation) are
:mod:`data.encodings.dense`. Examples hold ``(x - mean) / std`` as Float32, with mean and std from
train rows only; statistics are rounded to 10 significant digits so that they do not depend on the
summation order of parallel reductions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

from aptrank.data.encodings import Recipe


def fit(chunks: Iterable[pl.DataFrame | pl.LazyFrame], recipes: Mapping[str, Recipe]) -> dict[str, tuple[float, float]]:
    """Mean and population std of each recipe's value over all rows of ``chunks`` (train rows, in a
    fixed order). Per-chunk moments are merged with the pairwise update of Chan, Golub & LeVeque
    ("Updating formulae and a pairwise algorithm for computing sample variances", 1979)."""
    moments = {name: (0, 0.0, 0.0) for name in recipes}
    for chunk in chunks:
        exprs = []
        for name, r in recipes.items():
            v = r.polars_expr().fill_nan(None)
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
