"""Point-in-time counts per entity (DESIGN.md contract 3): what was known strictly before ``ts``.

For a row with key k and time t and a window w, the window holds the events of k with
``t - w <= ts' < t``: events at exactly t, ties included, are *not* before t; the ``all`` window
holds every event of k with ``ts' < t``. Per window we count events (``<entity>_<window>_n``) and
each task's positives (``<entity>_<window>_<task>_pos``); the dense features (log1p count,
smoothed rate) are derived from these raw counts by :mod:`data.etl.dense`.

The same code produces the examples' features (every event is a query) and the feature snapshot
(one extra *query row* per key at the cutoff, with weight 0 so it counts nothing): there is no
second implementation. The user's history lists (:mod:`data.etl.history`) read the same index.

Algorithm (:class:`KeyTimeIndex`, vectorised, one stable sort): order rows by (key, ts, input row)
and give each the composite time T = block(key) * G + ts with G larger than the time span plus the
longest window, so that keys occupy disjoint ranges of T. With C the prefix sums of the weights in
that order, a window's sum is C[hi] - C[lo] where hi = the first row with T = T_i (ties excluded)
and lo = the first row with T >= T_i - w (a binary search of a sorted array) or the key's first
row (``all``). Everything is numpy on reusable buffers (:class:`Workspace`); the weight columns are
summed in parallel threads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from data.etl.config import window_ms
from data.etl.labels import label_column

WEIGHT = "_n"
"""1 for an event, 0 for a query row (snapshot) that must not count itself."""


def count_column(entity: str, window: str) -> str:
    return f"{entity}_{window}_n"


def positive_column(entity: str, window: str, task: str) -> str:
    return f"{entity}_{window}_{task}_pos"


def pit_columns(entity: str, windows: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """Raw count columns of one entity, in output order."""
    out = []
    for w in windows:
        out.append(count_column(entity, w))
        out += [positive_column(entity, w, t) for t in tasks]
    return out


class Workspace:
    """Reusable numpy buffers, handed out by name and grown when needed.

    Fresh memory is expensive here: every new page is a kernel fault and gets zeroed, which on a
    VM costs as much CPU as the arithmetic. The per-entity passes reuse the same buffers, so only
    the first entity pays. Arrays handed out stay valid until the same name is requested again."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int, dtype: type[np.generic]) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None or a.dtype != dtype or len(a) < n:
            a = self._arrays[name] = np.empty(max(n, 1), dtype=dtype)
        return a[:n]


def _changes(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """True where a sorted array's value differs from the previous one (and at 0)."""
    if len(values):
        np.not_equal(values[1:], values[:-1], out=out[1:])
        out[0] = True
    return out


def _run_starts(changed: np.ndarray, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Index of the first element of each element's run (``changed`` from :func:`_changes`)."""
    np.multiply(changed, positions, out=out)
    return np.maximum.accumulate(out, out=out)


class KeyTimeIndex:
    """Rows of a frame (sorted by ``ts``) ordered by (key, ts, input row), with the positions
    needed to sum any weight over 'same key, strictly earlier' windows."""

    def __init__(
        self, frame: pl.DataFrame, key: str, windows: Sequence[str], workspace: Workspace | None = None
    ) -> None:
        ws = self.ws = workspace or Workspace()
        n = self.rows = frame.height
        self.frame = frame
        keys = frame[key]
        order32 = frame.select(pl.arg_sort_by(key, maintain_order=True, nulls_last=True)).to_series().to_numpy()
        self.order = ws.get("order", n, np.int64)
        self.order[:] = order32
        positions = ws.get("positions", n, np.int64)
        positions[:] = np.arange(n)
        self.inverse = ws.get("inverse", n, np.int64)
        self.inverse[self.order] = positions
        codes = (keys if keys.dtype.is_integer() else keys.rank("dense")).cast(pl.Int64)
        self.valid = np.take(keys.is_not_null().to_numpy(), self.order, out=ws.get("valid", n, np.bool_))
        changed = ws.get("changed", n, np.bool_)
        sorted_codes = np.take(codes.fill_null(0).to_numpy(), self.order, out=ws.get("block", n, np.int64))
        _changes(sorted_codes, changed)
        np.logical_or(changed, ~self.valid, out=changed)  # every null key is its own block
        block = np.cumsum(changed, out=sorted_codes)  # the codes are no longer needed
        self.key_start = _run_starts(changed, positions, ws.get("key_start", n, np.int64))
        t = self.t = np.take(frame["ts"].dt.epoch("ms").to_numpy(), self.order, out=ws.get("t", n, np.int64))
        t -= t.min() if n else 0
        spans = [ms for ms in (window_ms(w) for w in windows) if ms is not None]
        gap = (int(t.max()) if n else 0) + max(spans, default=0) + 2
        t += block * gap
        self.hi = _run_starts(_changes(t, changed), positions, ws.get("hi", n, np.int64))
        """First sorted row with the same key and ts: everything before it is strictly earlier."""
        self.lo = {w: self._window_start(w) for w in windows}

    def _window_start(self, window: str) -> np.ndarray:
        ms = window_ms(window)
        if ms is None:
            return self.key_start
        return np.searchsorted(self.t, self.t - ms, side="left")

    def column(self, name: str) -> np.ndarray:
        """A column of the frame in sorted order (a workspace buffer)."""
        values = self.frame[name].to_numpy()
        return np.take(values, self.order, out=self.ws.get(f"col:{name}", self.rows, values.dtype.type))

    def to_input_order(self, slot: str, sorted_values: np.ndarray) -> np.ndarray:
        """Sorted-order values back in input order (the workspace buffer ``slot``)."""
        out = self.ws.get(f"out:{slot}", self.rows, sorted_values.dtype.type)
        return np.take(sorted_values, self.inverse, out=out)

    def window_sums(self, source: str, names: dict[str, str], slot: int = 0) -> dict[str, np.ndarray]:
        """Sums of column ``source`` over each window (``names``: window -> output name), in input
        order; rows with a null key get 0. ``slot`` picks the scratch buffers (one per thread)."""
        ws, n = self.ws, self.rows
        prefix = ws.get(f"prefix:{slot}", n + 1, np.uint32)
        prefix[0] = 0
        np.cumsum(self.column(source), dtype=np.uint32, out=prefix[1:])
        upto = np.take(prefix, self.hi, out=ws.get(f"upto:{slot}", n, np.uint32))
        part = ws.get(f"part:{slot}", n, np.uint32)
        out = {}
        for window, name in names.items():
            np.take(prefix, self.lo[window], out=part)
            np.subtract(upto, part, out=part)
            part[~self.valid] = 0
            out[name] = self.to_input_order(f"{source}:{window}", part)
        return out


def pit_counts(
    frame: pl.DataFrame,
    key: str,
    entity: str,
    windows: Sequence[str],
    tasks: Sequence[str],
    index: KeyTimeIndex | None = None,
) -> pl.DataFrame:
    """UInt32 counts (columns :func:`pit_columns`) for every row of ``frame``, which holds ``key``,
    ``ts``, :data:`WEIGHT` and ``label_<task>`` and is sorted by ``ts``. Null keys get 0. The frame
    shares memory with the index's workspace: copy what must outlive the next use of it."""
    index = index or KeyTimeIndex(frame, key, windows)
    sources = {WEIGHT: None, **{label_column(t): t for t in tasks}}

    def names(task: str | None) -> dict[str, str]:
        return {w: count_column(entity, w) if task is None else positive_column(entity, w, task) for w in windows}

    threads = max(1, min(pl.thread_pool_size(), len(sources)))
    groups = [list(sources.items())[i::threads] for i in range(threads)]

    def run(slot: int) -> dict[str, np.ndarray]:  # one thread per scratch slot; numpy releases the GIL
        return {k: v for src, task in groups[slot] for k, v in index.window_sums(src, names(task), slot).items()}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        columns = {k: v for part in pool.map(run, range(threads)) for k, v in part.items()}
    return pl.DataFrame({c: columns[c] for c in pit_columns(entity, windows, tasks)})


def with_queries(
    events: pl.LazyFrame, keys: pl.LazyFrame, key: str, cutoff: dt.datetime, extra: Sequence[str] = ()
) -> pl.LazyFrame:
    """``events`` (key, ts, weight 1, labels, ``extra`` columns) followed by one weight-0 query row
    per key of ``keys`` at ``cutoff`` (labels and extras 0). Stays sorted by ts when cutoff > every ts."""
    schema = events.collect_schema()
    labels = [c for c in schema if c.startswith("label_")]
    queries = keys.select(
        pl.col(key),
        pl.lit(cutoff).cast(schema["ts"]).alias("ts"),
        pl.lit(0, dtype=pl.UInt8).alias(WEIGHT),
        *[pl.lit(0, dtype=schema[c]).alias(c) for c in (*labels, *extra)],
    )
    base = events.select(key, "ts", pl.lit(1, dtype=pl.UInt8).alias(WEIGHT), *labels, *extra)
    return pl.concat([base, queries], how="vertical")
