"""The user's last-N positive items (jagged sequence features), strictly before each query time.

For a history on task k (e.g. clicks), the user's rows with ``label_k = 1``, in the (user, ts,
input row) order of the user's :class:`~data.etl.pit.KeyTimeIndex`, form one flat array of encoded
item ids in which each user's positives are a contiguous block. With P the prefix count of
positives in that order, a row whose first same-(user, ts) row is ``hi`` has ``P[hi]`` positives of
its user's block strictly before it (ties in ts are not before), so its list is the
``min(P[hi] - P[user start], max_len)`` flat items ending at ``end = P[hi] - 1``, read backwards:
most recent first (ties in ts: later input rows first).

Examples and the snapshot use the same functions; the examples carry only (end, length) per row and
:func:`gather_lists` builds the list column chunk by chunk while writing, with numpy (no per-row
Python), so the ETL never holds one list per event in memory.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from aptrank.data.etl.config import HistoryConfig
from aptrank.data.etl.labels import label_column
from aptrank.data.etl.pit import KeyTimeIndex, gather

ITEM_INDEX = "_item_index"
"""Encoded item id (item vocabulary/hash) the lists hold."""


def end_column(h: HistoryConfig) -> str:
    return f"_end_{h.name}"


def length_column(h: HistoryConfig) -> str:
    return f"_len_{h.name}"


def history_pointers(index: KeyTimeIndex, h: HistoryConfig) -> tuple[np.ndarray, pl.DataFrame]:
    """The flat positive items (sorted order) and, per query row of the index, ``_end_<name>`` and
    ``_len_<name>`` (Int32, Int64 from 2**31 rows; length 0 = empty list). The index's frame holds ``label_<task>`` and
    :data:`ITEM_INDEX`. With the index's state (:mod:`data.etl.prior`), each user's retained
    positives precede the day's in the flat array and count towards the lists."""
    is_pos = index.column(label_column(h.task)) == 1
    flat = index.column(ITEM_INDEX)[is_pos].astype(np.int64, copy=False)
    rows = index.rows + (len(index.prior.state.ts) if index.prior is not None else 0)
    dtype = np.int32 if rows < 2**31 else np.int64  # gathers move half the bytes
    count = index.ws.get("history_count", index.rows + 1, dtype)
    count[0] = 0
    np.cumsum(is_pos, out=count[1:])
    before = gather(count, index.hi, index.ws.get("history_before", index.outputs, dtype))
    length = gather(count, index.key_start, index.ws.get("history_length", index.outputs, dtype))
    np.subtract(before, length, out=length)
    if index.prior is not None:  # the user's retained positives come first in the user's block
        label = label_column(h.task)
        upto, own = index.prior.history(label)
        before += upto.astype(dtype, copy=False)
        length += own.astype(dtype, copy=False)
        flat = index.prior.merged_items(label, index.query_keys.filter(pl.Series(is_pos)), flat)
    np.minimum(length, h.max_len, out=length)
    before -= 1
    end = index.to_input_order(end_column(h), before)
    return flat, pl.DataFrame({end_column(h): end, length_column(h): index.to_input_order(length_column(h), length)})


def gather_lists(items: np.ndarray, end: np.ndarray, length: np.ndarray, name: str) -> pl.Series:
    """List(Int64) series: row i holds items[end[i]], items[end[i] - 1], ... (length[i] values)."""
    length = length.astype(np.int64, copy=False)
    offsets = np.zeros(len(length) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    # element j of row r is items[end[r] - (j - offsets[r])]
    last = np.repeat(end.astype(np.int64, copy=False) + offsets[:-1], length)
    values = items[last - np.arange(offsets[-1], dtype=np.int64)] if offsets[-1] else np.zeros(0, dtype=np.int64)
    arr = pa.LargeListArray.from_arrays(
        pa.array(offsets, type=pa.int64()), pa.array(values.astype(np.int64, copy=False), type=pa.int64())
    )
    return pl.Series(name, arr, dtype=pl.List(pl.Int64))


def lists_for(frame: pl.DataFrame, items: np.ndarray, h: HistoryConfig) -> pl.Series:
    """The history list column of ``frame`` (which has ``_end_<name>`` and ``_len_<name>``)."""
    return gather_lists(items, frame[end_column(h)].to_numpy(), frame[length_column(h)].to_numpy(), h.name)
