"""Point-in-time counts per entity (DESIGN.md contract 3): what was known strictly before ``ts``.

For a row with key k and time t and a window w, the window holds the events of k with
``t - w <= ts' < t``: events at exactly t, ties included, are *not* before t; the ``all`` window
holds every event of k with ``ts' < t``. Per window we count events (``<entity>_<window>_n``) and
each task's positives (``<entity>_<window>_<task>_pos``); the dense features (log1p count,
smoothed rate) are derived from these raw counts by :mod:`data.encodings.dense`.

The same code produces the examples' features (every event is a query) and the feature snapshot
(one extra *query row* per key at the cutoff, with weight 0 so it counts nothing): there is no
second implementation. The user's history lists (:mod:`data.etl.history`) read the same index.

Algorithm (:class:`KeyTimeIndex`, vectorised): give each key an integer code (the key minus its
minimum when that range is small, else its dense rank; every null key a code of its own) and sort
the unique composites ``code << b | input row`` (numpy's SIMD sort of int64; no argsort). As the
input is in ts order, this orders rows by (key, ts, input row) and yields both the order and the
sorted codes. Each row then gets the composite time T = block(key) * G + ts with G larger than the
time span plus the longest window, so that keys occupy disjoint ranges of T. With C the prefix sums
of the weights in that order, a window's sum is C[hi] - C[lo] where hi = the first row with T = T_i
(ties excluded) and lo = the first row with T >= T_i - w (:func:`search_sorted_queries`) or the
key's first row (``all``); a null key's row is alone in its block, so all its sums are 0. The sums
go back to input order by a scatter. Everything is numpy on reusable buffers (:class:`Workspace`).

Daily freshness (:mod:`data.etl.freshness`) moves each row's query time from its ts to the start
of its day D0 (``KeyTimeIndex(day_zone=...)``): hi becomes the first row of the key with T >= the
query's composite time and the windows end there; G then also covers the distance D0 - ts < 1 day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from aptrank.data.etl.config import window_ms
from aptrank.data.etl.freshness import day_floor_ms
from aptrank.data.etl.labels import label_column

if TYPE_CHECKING:
    from aptrank.data.etl.prior import StatePrior

THREADS = 2
"""Threads for the per-window searches and the per-source sums (numpy releases the GIL)."""

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


def key_codes(keys: pl.Series, limit: int) -> np.ndarray:
    """Int64 codes in [0, limit): equal for equal keys, ordered like the keys, and one code of its
    own per null key (after all keys). The key minus its minimum when that fits, else its dense
    rank (strings, or integers spread too wide)."""
    n, valid = len(keys), len(keys) - keys.null_count()
    codes = None
    if keys.dtype.is_integer() and valid:
        low, high = int(keys.min()), int(keys.max())  # type: ignore[arg-type]
        if high - low + n < limit:
            values = keys.fill_null(low).to_numpy()
            if values.dtype.kind == "u":  # no negative values: subtract in place, then widen
                codes = (values - values.dtype.type(low)).astype(np.int64)
            else:
                codes = np.subtract(values, low, dtype=np.int64)
    if codes is None:
        codes = keys.rank("dense").fill_null(0).cast(pl.Int64).to_numpy().copy()
    if valid < n:
        nulls = np.flatnonzero(keys.is_null().to_numpy())
        codes[nulls] = int(codes.max()) + 1 + np.arange(len(nulls))
    return codes


def gather(values: np.ndarray, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``values[indices]`` into ``out``. The indices are always in range, so numpy's ``wrap`` mode
    gives the same result as the default ``raise`` without its per-element bounds check (2-3x
    faster)."""
    return np.take(values, indices, out=out, mode="wrap")


SEARCH_BLOCK = 4096


def search_sorted_queries(values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted(values, queries)`` (side left) for *sorted* queries, block by block: the
    answers to a block of queries lie between those of its first query and of the next block's, so
    each block searches only that slice of ``values``, which stays in cache (1.6x faster at 10M)."""
    out = np.empty(len(queries), dtype=np.int64)
    bounds = np.append(np.searchsorted(values, queries[::SEARCH_BLOCK]), len(values))
    for i, start in enumerate(range(0, len(queries), SEARCH_BLOCK)):
        lo, stop = bounds[i], start + SEARCH_BLOCK
        np.add(np.searchsorted(values[lo : bounds[i + 1]], queries[start:stop]), lo, out=out[start:stop])
    return out


class KeyTimeIndex:
    """Rows of a frame (sorted by ``ts``) ordered by (key, ts, input row), with the positions
    needed to sum any weight over 'same key, strictly earlier' windows. With ``first_query``, only
    the rows from there on get answers; the rows before it (an incremental run's state) only count,
    so the searches, sums and scatters grow with the query rows, not with the history. With
    ``day_zone`` (daily freshness, :mod:`data.etl.freshness`) every row is queried at the start of
    its calendar day in that time zone instead of at its own ts: its windows are ``[D0 - w, D0)``.
    With ``prior`` (an incremental day's state, :mod:`data.etl.prior`), every sum also counts the
    state's rows of the same key, found by search: the frame then holds only the day's rows."""

    def __init__(
        self,
        frame: pl.DataFrame,
        key: str,
        windows: Sequence[str],
        workspace: Workspace | None = None,
        first_query: int = 0,
        day_zone: str | None = None,
        prior: StatePrior | None = None,
    ) -> None:
        if prior is not None and first_query:
            raise ValueError("KeyTimeIndex: a state in front (first_query) or a state by search (prior), not both")
        with ThreadPoolExecutor(1) as background:  # the state's own passes, while the day's rows are sorted
            prepared = background.submit(prior.prepare) if prior is not None else None
            self._index(frame, key, windows, workspace, first_query, day_zone)
            if prepared is not None:
                prepared.result()
        self.prior = None
        if prior is not None:  # the query rows' keys and times, in sorted order, searched in the state
            rows = self.targets
            self.query_keys = frame[key].gather(rows)
            query_ms = frame["ts"].dt.epoch("ms").to_numpy()[rows]
            if day_zone is not None:  # daily freshness: the state is searched at the start of the day too
                query_ms = day_floor_ms(query_ms, day_zone)
            self.prior = prior.attach(self.query_keys, query_ms, windows)

    def _index(
        self,
        frame: pl.DataFrame,
        key: str,
        windows: Sequence[str],
        workspace: Workspace | None,
        first_query: int,
        day_zone: str | None,
    ) -> None:
        """The day's own rows: sort order, key blocks, query times and each window's first row."""
        ws = self.ws = workspace or Workspace()
        n = self.rows = frame.height
        self.first_query = first_query
        self.outputs = n - first_query
        """Rows that get answers: those from ``first_query`` on (the rows before only count)."""
        self.frame = frame
        self._sorted: dict[str, np.ndarray] = {}
        bits = max(n - 1, 1).bit_length()  # input rows < 2**bits
        positions = ws.get("positions", n, np.int64)
        positions[:] = np.arange(n)
        composite = ws.get("composite", n, np.int64)
        np.left_shift(key_codes(frame[key], 1 << (63 - bits)), bits, out=composite)
        composite |= positions
        composite.sort()  # unique values: any sort is stable; numpy's SIMD sort, no argsort
        self.order = np.bitwise_and(composite, (1 << bits) - 1, out=ws.get("order", n, np.int64))
        changed = _changes(np.right_shift(composite, bits, out=composite), ws.get("changed", n, np.bool_))
        self.key_start = _run_starts(changed, positions, ws.get("key_start", n, np.int64))
        block = np.cumsum(changed, out=composite)  # the codes are no longer needed
        t = self.t = gather(frame["ts"].dt.epoch("ms").to_numpy(), self.order, ws.get("t", n, np.int64))
        query = day_floor_ms(t, day_zone) if day_zone is not None else None  # daily freshness
        lag = int((t - query).max()) if query is not None and n else 0  # how far a query precedes its row
        origin = t.min() if n else 0
        t -= origin
        spans = [ms for ms in (window_ms(w) for w in windows) if ms is not None]
        t += np.multiply(block, (int(t.max()) if n else 0) + max(spans, default=0) + lag + 2, out=block)
        # hi, per query row (sorted order): the first sorted row with the same key at or after the
        # query time (its ts, or with day_zone the start of its day); everything before it is earlier
        if query is None:  # queried at its own ts: the first row with the same (key, ts)
            self.hi = _run_starts(_changes(t, changed), positions, ws.get("hi", n, np.int64))
            self.query_t = t
        else:  # queried at the start of its day: the first row of its key at or after that instant
            query -= origin
            query += block
            self.hi, self.query_t = search_sorted_queries(t, query), query
        self.targets = self.order
        """Per query row (sorted order): its output row."""
        if first_query:  # answers only for the query rows: keep their sorted positions
            queries = np.flatnonzero(self.order >= first_query)
            self.targets = np.subtract(self.order[queries], first_query)
            self.hi, self.key_start = self.hi[queries], self.key_start[queries]
            self.query_t = self.query_t[queries]
        with ThreadPoolExecutor(THREADS) as pool:  # numpy releases the GIL in searchsorted
            self.lo = dict(zip(windows, pool.map(self._window_start, windows), strict=True))

    def _window_start(self, window: str) -> np.ndarray:
        ms = window_ms(window)
        if ms is None:
            return self.key_start
        queries = self.ws.get(f"query:{window}", self.outputs, np.int64)  # per window: searched in parallel
        return search_sorted_queries(self.t, np.subtract(self.query_t, ms, out=queries))

    def column(self, name: str) -> np.ndarray:
        """A column of the frame in sorted order (a workspace buffer, gathered once)."""
        if name not in self._sorted:
            values = self.frame[name].to_numpy()
            out = self.ws.get(f"col:{name}", self.rows, values.dtype.type)
            self._sorted[name] = gather(values, self.order, out)
        return self._sorted[name]

    def to_input_order(self, slot: str, sorted_values: np.ndarray) -> np.ndarray:
        """The query rows' sorted-order values back in input order (the workspace buffer ``slot``;
        row 0 is row ``first_query``). A scatter by ``targets``: cheaper than a gather by the inverse
        permutation (1.5x at 10M rows)."""
        out = self.ws.get(f"out:{slot}", self.outputs, sorted_values.dtype.type)
        out[self.targets] = sorted_values
        return out

    def window_sums(self, source: str, names: dict[str, str], slot: int = 0) -> dict[str, np.ndarray]:
        """Sums of column ``source`` over each window (``names``: window -> output name) for the query
        rows, in input order (workspace buffers ``<source>:<window>``). Calls with different ``slot``
        use separate scratch buffers, so they can run in parallel threads."""
        ws, n, m = self.ws, self.rows, self.outputs
        prefix = ws.get(f"prefix{slot}", n + 1, np.uint32)
        prefix[0] = 0
        np.cumsum(self.column(source), dtype=np.uint32, out=prefix[1:])
        upto = gather(prefix, self.hi, ws.get(f"upto{slot}", m, np.uint32))
        part = ws.get(f"part{slot}", m, np.uint32)
        out = {}
        for window, name in names.items():
            np.subtract(upto, gather(prefix, self.lo[window], part), out=part)
            if self.prior is not None:
                part += self.prior.sums(source, window)
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
    """UInt32 counts (columns :func:`pit_columns`) for every query row of ``frame`` (all rows, or
    those from the index's ``first_query`` on), which holds ``key``, ``ts``, :data:`WEIGHT` and
    ``label_<task>`` and is sorted by ``ts`` within each key. Null keys get 0. The frame shares
    memory with the index's workspace: copy what must outlive the next use of it."""
    index = index or KeyTimeIndex(frame, key, windows)
    sources = list({WEIGHT: None, **{label_column(t): t for t in tasks}}.items())
    for source, _ in sources:  # gather the sorted columns once, before the threads share the cache
        index.column(source)

    def sums(slot: int) -> dict[str, np.ndarray]:  # every THREADS-th source, on scratch buffers `slot`
        out = {}
        for source, task in sources[slot::THREADS]:
            names = {w: count_column(entity, w) if task is None else positive_column(entity, w, task) for w in windows}
            out.update(index.window_sums(source, names, slot))
        return out

    columns: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(THREADS) as pool:
        for part in pool.map(sums, range(THREADS)):
            columns.update(part)
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
