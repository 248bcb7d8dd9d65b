"""Probe candidates for the scorers' load-time self-checks: varied timestamps and context values.

The factorised feature lookup (:mod:`serving.features`) and the per-user part of the graph
(:mod:`serving.user_precompute`) each compare their fast path with the plain one on such rows when
they load, so a change that breaks their assumptions fails at load, not silently in the scores.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from aptrank.data.spec import FeatureSpec

PROBE_SPAN_MS = 400 * 86_400_000
"""Probe rows' timestamps spread over the ~13 months before the snapshot cutoff."""


def probe_values(spec: FeatureSpec, column: str) -> list[object]:
    """Values of a context column worth probing: the vocabularies' values, the ranges' ends +- 1,
    one unseen value and null."""
    values: list[object] = []
    for f in spec.categorical:
        if f.encoding is not None and f.encoding.source == column:
            values += f.encoding.probe_values()
    ints = [v for v in values if isinstance(v, int)]
    if len(ints) == len(values):
        return [*ints, max(ints, default=0) + 1, None]
    return [*(str(v) for v in values), "\x00unseen", None]


def probe_rows(sample: pl.DataFrame, spec: FeatureSpec, context: list[str]) -> pl.DataFrame:
    """``sample`` (candidates at the cutoff) at seeded timestamps up to :data:`PROBE_SPAN_MS`
    before it, each context column cycling through :func:`probe_values`."""
    n = sample.height
    rng = np.random.default_rng(0)
    ts = sample["ts"].dt.epoch("ms").to_numpy() - rng.integers(0, PROBE_SPAN_MS, n)
    columns = [pl.Series("ts", ts).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")]
    for c in context:
        cycle = probe_values(spec, c)
        columns.append(pl.Series(c, [cycle[k % len(cycle)] for k in range(n)]))
    return sample.with_columns(columns)
