"""The daily state's share of the day's point-in-time answers, by search instead of by re-sorting.

Every query of an incremental day (the day's events and the snapshot's query rows, see
:mod:`data.etl.daily`) is later than every row of the state (:mod:`data.etl.state`), so its sums
split in two: over the day's own earlier rows (:class:`data.etl.pit.KeyTimeIndex` over the day's
frame alone) plus over the state's rows of the same key in ``[t - w, t)``. The state keeps each
entity's retained rows in (key, ts) order, so the second part is two binary searches per query
and window into them (the key's block, then the window's first row) and a difference of prefix
sums; the ``all`` window adds the key's carry row (running totals of the rows no window reaches).
History lists (:mod:`data.etl.history`) add the user's retained positives in front of the day's.
The work per day grows with the day's rows (and one linear pass per label over the state, plus one
for the keys' block times), not with a sort of the history: the sorted merge suggested in issue #17
happens once per day, when the next state is written (:func:`data.etl.state.add_day`). Those linear
passes depend on the state alone (:meth:`StatePrior.prepare`): they run in a thread of their own,
beside the sort of the day's rows. (Preparing every entity's state ahead, in one more thread, was
tried and measured slower on the shared 2-core VM: one thread more than cores, and every entity's
buffers alive at once; so was running two entity passes at a time. Writing the state in one record
batch per file, so that its columns would reach numpy without a copy, was measured slower: the day's
writes cost more than its reads saved.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig, HistoryConfig, window_ms
from aptrank.data.etl.history import ITEM_INDEX
from aptrank.data.etl.labels import label_column
from aptrank.data.etl.pit import WEIGHT, key_codes, search_sorted_queries
from aptrank.data.etl.state import DayState, longest_window_ms
from aptrank.data.schema import TS_DTYPE


@dataclass
class StatePrior:
    """One entity's state: retained rows in (key, ts) order, carry rows in key order."""

    keys: pl.Series
    """The retained rows' keys (sorted; no nulls)."""
    ts: np.ndarray
    """Their ts in epoch ms."""
    labels: dict[str, np.ndarray]
    """``label_<task>`` per retained row (0/1)."""
    carry_keys: pl.Series
    carry: dict[str, np.ndarray]
    """Per carry key: :data:`WEIGHT` and each label's running totals."""
    positives: dict[str, tuple[pl.Series, np.ndarray]] = field(default_factory=dict)
    """Per history label: the retained positives' users (sorted) and encoded items, in (user, ts) order."""
    rows: Callable[[list[str]], pl.DataFrame] | None = None
    """The same state as point-in-time input rows (:func:`prior_rows`), for engines
    that put them in front of the day's rows instead (Spark)."""
    _prefix: dict[str, np.ndarray] = field(default_factory=dict)

    _blocks: tuple[np.ndarray, int, int] | None = None

    def prefix(self, source: str) -> np.ndarray:
        """Prefix sums (length rows + 1) of a label over the retained rows; :data:`WEIGHT` is 1 per row."""
        if source not in self._prefix:
            out = np.zeros(len(self.ts) + 1, dtype=np.uint32)
            np.cumsum(self.labels[source], dtype=np.uint32, out=out[1:])
            self._prefix[source] = out
        return self._prefix[source]

    def blocks(self) -> tuple[np.ndarray, int, int]:
        """Per retained row the composite time ``block * span + ts - first`` (sorted, as the rows are in
        (key, ts) order; ``block`` = the row's key's rank), with ``first`` the earliest ts and ``span``
        the ts range + 2, so that each key's rows occupy their own range. Computed once per state."""
        if self._blocks is None:
            first = int(self.ts.min()) if len(self.ts) else 0
            span = int(self.ts.max()) - first + 2 if len(self.ts) else 2
            composite = key_codes(self.keys, np.iinfo(np.int64).max // span - 1)  # the key's rank, or key - min
            composite *= span
            composite += self.ts
            composite -= first
            self._blocks = composite, first, span
        return self._blocks

    def prepare(self) -> None:
        """Everything that depends on the state alone (:meth:`blocks`, every label's :meth:`prefix`):
        one linear pass each, which :class:`data.etl.pit.KeyTimeIndex` runs in a thread of its own while
        it sorts the day's rows (numpy and Polars release the GIL)."""
        self.blocks()
        for source in self.labels:
            self.prefix(source)

    def attach(self, keys: pl.Series, t: np.ndarray, windows: Sequence[str]) -> AttachedPrior:
        """Search positions for queries with ``keys`` at epoch-ms times ``t``: per query, its key's
        block ``[start, end)`` in the retained rows, each finite window's first row and its carry row.
        Keys are searched once per run of equal keys (the queries come in key order)."""
        keys = keys.cast(self.keys.dtype)
        run = keys.rle_id().to_numpy().astype(np.int64)
        distinct = keys.gather(np.searchsorted(run, np.arange(run[-1] + 1 if len(run) else 0)))
        start = self.keys.search_sorted(distinct, "left").to_numpy().astype(np.int64)
        end = self.keys.search_sorted(distinct, "right").to_numpy().astype(np.int64)
        nulls = distinct.is_null().to_numpy()  # a null key has no rows; its queries sort last
        start[nulls] = end[nulls] = len(self.ts)
        pos = np.minimum(
            self.carry_keys.search_sorted(distinct, "left").to_numpy().astype(np.int64), len(self.carry_keys)
        )
        inside = pos < len(self.carry_keys)
        found = np.zeros(len(distinct), dtype=bool)
        found[inside] = (
            (self.carry_keys.gather(pos[inside]) == distinct.filter(pl.Series(inside))).fill_null(False).to_numpy()
        )
        lo = {}
        if len(self.ts):  # per distinct key the block of its first row (or the one after the last key's)
            composite, first, span = self.blocks()
            after_last = int(composite[-1]) // span + 1
            rows = len(composite)
            key_block = np.where(start < rows, composite[np.minimum(start, rows - 1)] // span, after_last)
            # a key without rows: the start of the next key's block, so `since` stays sorted
            query_block, present = key_block[run] * span, (start < end)[run]
        start, end, carry_row = start[run], end[run], np.where(found, pos, -1)[run]
        for w in windows if len(self.ts) else ():
            if (ms := window_ms(w)) is not None:
                offset = np.subtract(t, ms + first)
                np.minimum(np.maximum(offset, 0, out=offset), span - 1, out=offset)
                offset[~present] = 0
                since = np.add(offset, query_block, out=offset)
                sorted_ = _is_sorted(since)  # the block-wise search needs sorted queries
                hit = search_sorted_queries(composite, since) if sorted_ else np.searchsorted(composite, since)
                lo[w] = np.minimum(np.maximum(hit, start, out=hit), end, out=hit)
        return AttachedPrior(self, distinct, run, start, end, lo, carry_row)


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


@dataclass
class AttachedPrior:
    """A :class:`StatePrior` searched for one set of queries (in the order they were given)."""

    state: StatePrior
    distinct: pl.Series
    """The queries' keys, one per run of equal keys."""
    run: np.ndarray
    """Per query: its run (position in ``distinct``)."""
    start: np.ndarray
    end: np.ndarray
    lo: dict[str, np.ndarray]
    carry_row: np.ndarray
    """Per query: its key's carry row, -1 when it has none."""
    _upto: dict[str, np.ndarray] = field(default_factory=dict)

    def sums(self, source: str, window: str) -> np.ndarray:
        """Per query: the sum of ``source`` over its key's state rows in the window (UInt32)."""
        lo = self.lo.get(window, self.start)  # `all`: the key's whole block
        if source == WEIGHT:
            out = (self.end - lo).astype(np.uint32)
        else:  # the prefix at the block's end is the same for every window: gathered once per source
            prefix = self.state.prefix(source)
            if source not in self._upto:
                self._upto[source] = prefix[self.end]
            out = self._upto[source] - prefix[lo]
        if window_ms(window) is None and len(self.state.carry_keys):
            has = self.carry_row >= 0
            out[has] += self.state.carry[source][self.carry_row[has]]
        return out

    def history(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the retained positives of users up to and including its user, and its user's own."""
        users, _ = self.state.positives[label]
        upto = users.search_sorted(self.distinct, "right").to_numpy().astype(np.int64)
        own = upto - users.search_sorted(self.distinct, "left").to_numpy().astype(np.int64)
        return upto[self.run], own[self.run]

    def merged_items(self, label: str, day_users: pl.Series, day_items: np.ndarray) -> np.ndarray:
        """The retained positives and the day's (``day_users``/``day_items`` in (user, ts) order) as
        one flat array, per user its retained items then its day items, users in key order: the
        layout :meth:`history` counts in."""
        users, items = self.state.positives[label]
        day_users = day_users.cast(users.dtype)
        out = np.empty(len(items) + len(day_items), dtype=np.int64)
        out[np.arange(len(day_items)) + users.search_sorted(day_users, "right").to_numpy()] = day_items
        out[np.arange(len(items)) + day_users.search_sorted(users, "left").to_numpy()] = items
        return out


def prior_rows(state: DayState, entity: str, columns: list[str], cfg: EtlConfig) -> pl.DataFrame:
    """The state as point-in-time input rows of ``entity`` (``columns`` of :func:`data.etl.pit.with_queries`)
    in (key, ts) order: per key its carry row, then its retained events (weight 1). A linear merge of
    two key-sorted files, so the point-in-time sort (:class:`data.etl.pit.KeyTimeIndex`) only has to
    merge the day's rows into them (the user's history lists read the stored encoded item id)."""
    key = ENTITY_KEYS[entity]
    labels = [label_column(t) for t in cfg.task_names]
    retained = state.retained[entity]
    floor = state.cutoff - dt.timedelta(milliseconds=longest_window_ms(cfg))
    if retained.height:
        floor = min(floor, retained["ts"].min())  # type: ignore[type-var]
    carry_ts = pl.lit(floor - dt.timedelta(milliseconds=1)).cast(TS_DTYPE).alias("ts")
    extra = [c for c in columns if c not in (key, "ts", WEIGHT, *labels)]
    carry = state.carry[entity]
    rows = [
        carry.select(
            key,
            carry_ts,
            *[pl.col(c).cast(pl.UInt32) if c in carry else pl.lit(0, pl.UInt32).alias(c) for c in (WEIGHT, *labels)],
            *[pl.lit(0, pl.Int64).alias(c) for c in extra],
        ),
        retained.select(
            key,
            pl.col("ts").cast(TS_DTYPE),
            pl.lit(1, pl.UInt32).alias(WEIGHT),
            *[pl.col(c).cast(pl.UInt32) for c in labels],
            *[pl.col(ITEM_INDEX).cast(pl.Int64).alias(c) for c in extra],
        ),
    ]
    return rows[0].merge_sorted(rows[1], key).select(columns)  # on a tie the carry row (left) comes first


def state_prior(state: DayState, entity: str, cfg: EtlConfig, histories: Sequence[HistoryConfig]) -> StatePrior:
    """The state of ``entity`` for the day's point-in-time searches (:mod:`data.etl.prior`): the
    retained rows' keys, ts and labels as they are stored (memory-mapped, in key order), the carry
    and, per history, the retained positives with their encoded items (stored, :data:`ITEM_INDEX`)."""
    key = ENTITY_KEYS[entity]
    labels = [label_column(t) for t in cfg.task_names]
    retained, carry = state.retained[entity], state.carry[entity]
    positives = {}
    for h in histories:
        pos = retained.lazy().filter(pl.col(label_column(h.task)) == 1)
        rows = pos.select(key, ITEM_INDEX).collect()
        positives[label_column(h.task)] = (rows[key], rows[ITEM_INDEX].to_numpy())
    return StatePrior(
        retained[key],
        retained["ts"].dt.epoch("ms").to_numpy(),
        {c: retained[c].to_numpy() for c in labels},
        carry[key],
        {c: carry[c].cast(pl.UInt32).to_numpy() for c in (WEIGHT, *labels)},
        positives,
        lambda columns: prior_rows(state, entity, columns, cfg),
    )


__all__ = ["AttachedPrior", "StatePrior", "prior_rows", "state_prior"]
