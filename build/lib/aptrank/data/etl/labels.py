"""Task labels from canonical events (DESIGN.md contract 2), defined by :class:`data.spec.TaskLabel`.

* ``binary_column``: the event column ``column`` (already validated to be 0/1).
* ``watch_ratio``: 1 when ``watch_ms >= min_ratio * duration`` and ``duration > 0``. The duration is
  the event's own ``duration_ms`` column when the events have one (KuaiRand logs the duration as
  served), else the item table's. Null or non-positive duration, or null watch time, gives 0; rows
  with a missing duration are counted in the summary (``finish_duration_missing``).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from aptrank.data.spec import TaskLabel

EVENT_DURATION = "duration_ms"
ITEM_DURATION = "item_duration_ms"


def label_column(task: str) -> str:
    """Name of a task's label column in examples (Int8)."""
    return f"label_{task}"


def duration_column(event_columns: Sequence[str]) -> str:
    """The duration the watch_ratio labels read: the event's own when present, else the item's."""
    return EVENT_DURATION if EVENT_DURATION in event_columns else ITEM_DURATION


def label_exprs(tasks: Sequence[TaskLabel], duration: str) -> list[pl.Expr]:
    """One Int8 ``label_<task>`` expression per task."""
    out = []
    for t in tasks:
        if t.kind == "binary_column":
            expr = pl.col(str(t.column))
        else:
            d = pl.col(duration)
            expr = ((pl.col("watch_ms") >= float(t.min_ratio or 0) * d) & (d > 0)).fill_null(False)
        out.append(expr.cast(pl.Int8).alias(label_column(t.name)))
    return out


def missing_duration(duration: str) -> pl.Expr:
    """True where the duration a watch_ratio label needs is null or <= 0."""
    return pl.col(duration).is_null() | (pl.col(duration) <= 0)
