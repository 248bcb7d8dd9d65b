"""Stages 1-2 of the ETL: validate every canonical event (reject file and accounting), then write
the accepted events with their item/user attributes and labels in (ts, input row) order.

The checked events (input columns, ``_row`` and ``reason``) are collected once into memory and
every later question (reason counts, input order, rejects, accepted and duplicate rows) is answered
from that frame: no work file is written and re-read, and the joins run on the in-memory engine,
which is several times cheaper than the streaming engine's order-keeping joins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from aptrank.data.adapters import CanonicalTables
from aptrank.data.etl.config import EtlConfig, EtlConfigError
from aptrank.data.etl.labels import label_column, label_exprs, missing_duration
from aptrank.data.etl.parts import write_frame
from aptrank.data.etl.summary import reject_accounting
from aptrank.data.etl.validate import DUPLICATE, ROW, check_events
from aptrank.data.etl.workfiles import EVENTS, WorkFiles

NO_DURATION = "_no_dur"


@dataclass
class Accepted:
    rows: int
    no_duration: int
    """Rows whose watch_ratio duration is null or <= 0 (their finish label is 0)."""
    rates_with_duplicates: dict[str, float]
    """Label rates over accepted rows plus duplicate copies: what the raw log shows when no row is
    invalid (e.g. the KuaiRand sample)."""


class Intake:
    def __init__(self, cfg: EtlConfig, work: WorkFiles) -> None:
        self.cfg, self.work = cfg, work
        self.labels = [label_column(t) for t in cfg.task_names]
        self.checked = pl.DataFrame()
        """Every input row with ``_row`` and ``reason`` (null = accepted); set by :meth:`validate`."""

    def validate(self, tables: CanonicalTables, rejects_path: Any) -> dict[str, Any]:
        """Reason per row (kept in memory), rejected rows (as they came in, plus ``input_row`` and
        ``reason``) to ``rejects_path``; returns the reject accounting."""
        event_columns = list(tables.events.collect_schema())
        # streaming engine: about half the peak memory of the in-memory engine for this query
        self.checked = check_events(
            tables.events, tables.items, self.cfg, tables.files.get("events", "events")
        ).collect(engine="streaming")
        reasons = self.checked["reason"]
        counts = reasons.value_counts(sort=False)
        by_reason = {r: int(c) for r, c in counts.iter_rows() if r is not None}
        rejects = self.checked.filter(reasons.is_not_null()).select(
            pl.col(ROW).alias("input_row"), *event_columns, pl.col("reason").cast(pl.String)
        )
        write_frame(rejects, rejects_path, self.cfg.output)
        v = self.cfg.validation
        return reject_accounting(by_reason, self.checked.height, v.max_reject_rate, v.max_duplicate_rate)

    def accept(
        self, items: pl.LazyFrame | None, users: pl.LazyFrame | None, duration: str, allow_empty: bool = False
    ) -> Accepted:
        """Accepted events with attributes and labels to work/events.arrow (sorted by ts, input row);
        releases the checked rows. ``allow_empty``: no accepted event is fine (a day without events)."""
        if (
            items is None
            and duration not in self.checked.columns
            and any(t.kind == "watch_ratio" for t in self.cfg.tasks)
        ):
            raise EtlConfigError(
                "watch_ratio tasks need a duration: events have no duration_ms and there is no items table"
            )
        acc = self.labeled(pl.col("reason").is_null(), items, duration)
        if users is not None:
            acc = acc.join(users, on="user_id", how="left", maintain_order="left")
        accepted = pl.col("reason").is_null()
        in_order = self.checked.select((pl.col("ts").filter(accepted).diff().dt.total_milliseconds() >= 0).all())
        events = (acc if in_order.item() is not False else acc.sort(["ts", ROW])).collect()
        sums = [pl.col(c).cast(pl.Int64).sum() for c in self.labels]
        n, no_duration, *positives = events.select(pl.len(), pl.col(NO_DURATION).sum(), *sums).row(0)
        if n == 0 and not allow_empty:
            raise EtlConfigError("no event passed validation: nothing to build examples from (see rejects.parquet)")
        self.work.write(events, EVENTS)
        del events
        dupes, *dupe_positives = (
            self.labeled(pl.col("reason") == DUPLICATE, items, duration).select(pl.len(), *sums).collect().row(0)
        )
        self.checked = pl.DataFrame()
        seen = max(n + dupes, 1)  # 0 only on a day without events
        rates = {t: (positives[k] + (dupe_positives[k] or 0)) / seen for k, t in enumerate(self.cfg.task_names)}
        return Accepted(int(n), int(no_duration or 0), rates)

    def labeled(self, rows: pl.Expr, items: pl.LazyFrame | None, duration: str) -> pl.LazyFrame:
        """Checked rows selected by ``rows`` with item attributes and labels."""
        frame = self.checked.lazy().filter(rows).drop("reason")
        if items is not None:
            frame = frame.join(items, on="item_id", how="left", maintain_order="left")
        return frame.with_columns(*label_exprs(self.cfg.tasks, duration), missing_duration(duration).alias(NO_DURATION))
