"""The daily state's share of the day's point-in-time answers, by search instead of by re-sorting.

Every query of an incremental day (the day's events and the snapshot's query rows, see
:mod:`data.etl.daily`) is later than every row of the state (:mod:`data.etl.state`), so its sums
split in two: over the day's own earlier rows (:class:`data.etl.pit.KeyTimeIndex` over the day's
frame alone) plus over the state's rows of the same key in ``[t - w, t)``. The state keeps each
entity's retained rows in (key, ts) order, so the second part is two binary searches per query
and window into them (the key's block, then the window's first row) and a difference of prefix
sums; the ``all`` window adds the key's carry row (running totals of the rows no window reaches).
History lists (:mod:`data.etl.history`) add the user's retained positives in front of the day's.
The work per day grows with the day's rows (and one linear prefix pass per label over the state),
not with a sort of the history: the sorted merge suggested in issue #17 happens once per day, when
the next state is written (:func:`data.etl.state.add_day`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aptrank.data.etl.config import window_ms
from aptrank.data.etl.pit import WEIGHT


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
    """The same state as point-in-time input rows (:func:`data.etl.state.prior_rows`), for engines
    that put them in front of the day's rows instead (Spark)."""
    _prefix: dict[str, np.ndarray] = field(default_factory=dict)

    def prefix(self, source: str) -> np.ndarray:
        """Prefix sums (length rows + 1) of a label over the retained rows; :data:`WEIGHT` is 1 per row."""
        if source not in self._prefix:
            out = np.zeros(len(self.ts) + 1, dtype=np.uint32)
            np.cumsum(self.labels[source], dtype=np.uint32, out=out[1:])
            self._prefix[source] = out
        return self._prefix[source]

    def attach(self, keys: pl.Series, t: np.ndarray, windows: Sequence[str]) -> AttachedPrior:
        """Search positions for queries with ``keys`` at epoch-ms times ``t``: per query, its key's
        block ``[start, end)`` in the retained rows, each finite window's first row and its carry row."""
        keys = keys.cast(self.keys.dtype)
        start = self.keys.search_sorted(keys, "left").to_numpy().astype(np.int64)
        end = self.keys.search_sorted(keys, "right").to_numpy().astype(np.int64)
        end = np.where(keys.is_null().to_numpy(), start, end)  # a null key has no rows
        lo = {}
        if len(self.ts):
            first, span = int(self.ts.min()), int(self.ts.max()) - int(self.ts.min()) + 2
            composite = self.keys.rle_id().to_numpy().astype(np.int64)  # per row its key's block
            query_block = composite[np.minimum(start, len(composite) - 1)] * span
            composite *= span  # block * span + ts - first: sorted, as the rows are in (key, ts) order
            composite += self.ts
            composite -= first
            for w in windows:
                if (ms := window_ms(w)) is not None:
                    since = query_block + np.clip(t - ms - first, 0, span - 1)
                    lo[w] = np.clip(np.searchsorted(composite, since), start, end)
        pos = np.minimum(self.carry_keys.search_sorted(keys, "left").to_numpy().astype(np.int64), len(self.carry_keys))
        found = np.zeros(len(keys), dtype=bool)
        inside = pos < len(self.carry_keys)
        found[inside] = (
            (self.carry_keys.gather(pos[inside]) == keys.filter(pl.Series(inside))).fill_null(False).to_numpy()
        )
        return AttachedPrior(self, keys, start, end, lo, np.where(found, pos, -1))


@dataclass
class AttachedPrior:
    """A :class:`StatePrior` searched for one set of queries (in the order they were given)."""

    state: StatePrior
    keys: pl.Series
    start: np.ndarray
    end: np.ndarray
    lo: dict[str, np.ndarray]
    carry_row: np.ndarray
    """Per query: its key's carry row, -1 when it has none."""

    def sums(self, source: str, window: str) -> np.ndarray:
        """Per query: the sum of ``source`` over its key's state rows in the window (UInt32)."""
        prefix = None if source == WEIGHT else self.state.prefix(source)
        lo = self.lo.get(window, self.start)  # `all`: the key's whole block
        out = (self.end - lo).astype(np.uint32) if prefix is None else prefix[self.end] - prefix[lo]
        if window_ms(window) is None and len(self.state.carry_keys):
            has = self.carry_row >= 0
            out[has] += self.state.carry[source][self.carry_row[has]]
        return out

    def history(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the retained positives of users up to and including its user, and its user's own."""
        users, _ = self.state.positives[label]
        upto = users.search_sorted(self.keys, "right").to_numpy().astype(np.int64)
        return upto, upto - users.search_sorted(self.keys, "left").to_numpy().astype(np.int64)

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


__all__ = ["AttachedPrior", "StatePrior"]
