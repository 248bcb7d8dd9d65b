"""One entity's point-in-time features over a frame of its rows: the per-key code every engine runs.

The embedded engine calls :func:`entity_features` once per entity on the whole frame; the Spark
engine (:mod:`data.etl.spark`) calls it inside each partition of the frame hash-partitioned by the
entity key (a key's rows never span two partitions, and both give the same numbers because every
feature only looks at rows of the same key). Counts: :func:`data.etl.pit.pit_counts`; history lists:
:func:`data.etl.history.history_pointers` (Covington et al., RecSys 2016, watch history as input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow.compute as pc

from aptrank.data.etl.config import HistoryConfig
from aptrank.data.etl.history import end_column, history_pointers, length_column
from aptrank.data.etl.pit import KeyTimeIndex, Workspace, pit_counts
from aptrank.data.etl.prior import StatePrior


@dataclass
class EntityFeatures:
    counts: pl.DataFrame | None
    """:func:`data.etl.pit.pit_columns` per frame row (None when the entity gets no counts)."""
    histories: dict[str, tuple[np.ndarray, pl.DataFrame]] = field(default_factory=dict)
    """Per history name: the flat encoded items and the (end, length) pointers per frame row."""


def entity_features(
    frame: pl.DataFrame,
    key: str,
    entity: str,
    windows: Sequence[str],
    tasks: Sequence[str],
    histories: Sequence[HistoryConfig],
    with_counts: bool,
    workspace: Workspace | None = None,
    first_query: int = 0,
    day_zone: str | None = None,
    prior: StatePrior | None = None,
) -> EntityFeatures:
    """Counts and history pointers of the rows of ``frame`` from ``first_query`` on (sorted by ts;
    see :func:`data.etl.pit.with_queries`; the rows before only count), each as of its ts or, with
    ``day_zone`` (daily freshness), as of the start of its day there, with ``prior`` the daily
    state's share added (:mod:`data.etl.prior`). Results may share the workspace's buffers."""
    index = KeyTimeIndex(frame, key, windows, workspace, first_query, day_zone, prior)
    counts = pit_counts(frame, key, entity, windows, tasks, index) if with_counts else None
    return EntityFeatures(counts, {h.name: history_pointers(index, h) for h in histories})


def pointers_from_lists(lists: pl.Series, h: HistoryConfig) -> tuple[np.ndarray, pl.DataFrame]:
    """Flat items and (end, length) pointers that :func:`data.etl.history.lists_for` turns back into
    ``lists``: each row's list, oldest first, one after the other (for lists computed elsewhere)."""
    lengths = lists.list.len().cast(pl.Int64).to_numpy()
    values = pc.list_flatten(lists.list.reverse().to_arrow())
    flat = values.to_numpy(zero_copy_only=False).astype(np.int64) if len(values) else np.zeros(0, np.int64)
    end = np.cumsum(lengths) - 1
    return flat, pl.DataFrame({end_column(h): end, length_column(h): lengths})


__all__ = ["EntityFeatures", "entity_features", "pointers_from_lists"]
