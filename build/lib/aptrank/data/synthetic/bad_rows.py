"""Malformed rows the ETL must reject, injected so that each one breaks exactly one rule.

Kinds (the manifest counts each exactly; a row is bad for one reason only):

* ``null_key``        user_id or item_id is null (nothing else changed);
* ``malformed_key``   user_id is negative (-(id + 1)); only the user key, because a negative item id
                      would also be an item without metadata (two reasons);
* ``null_ts``         ts is null; these rows have pairwise distinct (user_id, item_id), so even a
                      null-equal duplicate check cannot see them as repeats;
* ``ts_out_of_range`` ts moved to 1970 (ts - start) or to 2100 (ts + (2100-01-01 - start));
* ``label_not_binary`` click or like set to 2 or -1;
* ``negative_watch``  watch_ms = -(watch_ms + 1);
* ``unknown_item``    item_id replaced by an id >= the number of items (absent from items.parquet);
* ``duplicate_impression`` an exact copy of a clean row, written right after it (the copy is the
                      bad row).

The kind names are the ETL's reject reasons (``data.etl.validate.REASONS``), in the same order.

Clean timestamps are strictly increasing within a day (:mod:`data.synthetic.clock`) and every
corruption keeps or maps them one-to-one, so no bad row repeats another row's (user, item, ts).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from aptrank.data.synthetic.clock import epoch_ms


class BadKind(StrEnum):
    NULL_KEY = "null_key"
    MALFORMED_KEY = "malformed_key"
    NULL_TS = "null_ts"
    TS_OUT_OF_RANGE = "ts_out_of_range"
    LABEL_NOT_BINARY = "label_not_binary"
    NEGATIVE_WATCH = "negative_watch"
    UNKNOWN_ITEM = "unknown_item"
    DUPLICATE = "duplicate_impression"


BAD_KINDS: tuple[BadKind, ...] = tuple(BadKind)
CLEAN = -1
LATE_YEAR = 2100


def bad_totals(events: int, fraction: float) -> np.ndarray:
    """Bad rows per kind (order :data:`BAD_KINDS`): round(fraction * events) split evenly, the
    remainder going to the first kinds."""
    total = round(fraction * events)
    counts = np.full(len(BAD_KINDS), total // len(BAD_KINDS), dtype=np.int64)
    counts[: total % len(BAD_KINDS)] += 1
    return counts


@dataclass
class Corruptor:
    """Applies a chunk's quota of bad rows; remembers state that spans chunks."""

    n_items: int
    start: dt.date
    null_ts_pairs: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    variants: Counter[str] = field(default_factory=Counter)

    def assign(self, rng: np.random.Generator, users: np.ndarray, items: np.ndarray, quota: np.ndarray) -> np.ndarray:
        """Kind index per row (:data:`CLEAN` for clean rows); ``quota[k]`` rows get kind k
        (for ``duplicate_impression``: the clean originals that will be copied)."""
        n = len(users)
        kinds = np.full(n, CLEAN, dtype=np.int8)
        perm = rng.permutation(n)
        null_ts = BAD_KINDS.index(BadKind.NULL_TS)
        if quota[null_ts]:
            codes = users.astype(np.int64) * self.n_items + items
            fresh = perm[~np.isin(codes[perm], self.null_ts_pairs)]
            _, first = np.unique(codes[fresh], return_index=True)
            chosen = fresh[np.sort(first)][: quota[null_ts]]
            if len(chosen) < quota[null_ts]:
                raise RuntimeError("too few distinct (user, item) pairs to place null_ts rows; grow users or items")
            kinds[chosen] = null_ts
            self.null_ts_pairs = np.union1d(self.null_ts_pairs, codes[chosen])
        rest = perm[kinds[perm] == CLEAN]
        offset = 0
        for k, count in enumerate(quota):
            if k != null_ts:
                kinds[rest[offset : offset + count]] = k
                offset += count
        return kinds

    def apply(
        self, rng: np.random.Generator, cols: dict[str, np.ndarray], kinds: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Corrupt ``cols`` in place per ``kinds``; return (columns with duplicates inserted, null
        masks per column)."""
        n = len(kinds)
        masks = {name: np.zeros(n, dtype=bool) for name in ("user_id", "item_id", "ts")}
        rows = {kind: np.flatnonzero(kinds == k) for k, kind in enumerate(BAD_KINDS)}

        side = self._split(rng, BadKind.NULL_KEY, rows[BadKind.NULL_KEY], ("user_id", "item_id"))
        for column, idx in side.items():
            masks[column][idx] = True
        cols["user_id"][rows[BadKind.MALFORMED_KEY]] = -(cols["user_id"][rows[BadKind.MALFORMED_KEY]] + 1)
        masks["ts"][rows[BadKind.NULL_TS]] = True
        start_ms = epoch_ms(self.start)
        when = self._split(rng, BadKind.TS_OUT_OF_RANGE, rows[BadKind.TS_OUT_OF_RANGE], ("1970", str(LATE_YEAR)))
        cols["ts"][when["1970"]] -= start_ms
        cols["ts"][when[str(LATE_YEAR)]] += epoch_ms(dt.date(LATE_YEAR, 1, 1)) - start_ms
        labels = self._split(rng, BadKind.LABEL_NOT_BINARY, rows[BadKind.LABEL_NOT_BINARY], ("click", "like"))
        for column, idx in labels.items():
            cols[column][idx] = np.where(rng.random(len(idx)) < 0.5, 2, -1).astype(np.int8)
        cols["watch_ms"][rows[BadKind.NEGATIVE_WATCH]] = -(cols["watch_ms"][rows[BadKind.NEGATIVE_WATCH]] + 1)
        unknown = rows[BadKind.UNKNOWN_ITEM]
        cols["item_id"][unknown] = self.n_items + rng.integers(0, self.n_items, len(unknown))

        order = np.repeat(np.arange(n), 1 + (kinds == BAD_KINDS.index(BadKind.DUPLICATE)))
        return {k: v[order] for k, v in cols.items()}, {k: v[order] for k, v in masks.items()}

    def _split(
        self, rng: np.random.Generator, kind: BadKind, idx: np.ndarray, names: tuple[str, str]
    ) -> dict[str, np.ndarray]:
        """Split rows of ``kind`` in two variants at random; count each variant."""
        first = rng.random(len(idx)) < 0.5
        out = {names[0]: idx[first], names[1]: idx[~first]}
        for name, part in out.items():
            self.variants[f"{kind}.{name}"] += len(part)
        return out
