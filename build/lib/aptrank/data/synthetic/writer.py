"""Parquet output of the generator: the event schema and a day-partitioned, part-rolling writer.

Events go to ``events/date=YYYY-MM-DD/part-NNNNN.parquet`` (Hive-style partition directories; the
date lives in the path, not in the files). Each written chunk becomes one row group; only one file
is open at a time, so memory does not depend on the number of events.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from aptrank.data.schema import EVENTS

COMPRESSION = "zstd"
TRUTH_COLUMNS: tuple[str, ...] = ("p_click", "p_like", "p_finish")


def event_schema(truth: bool) -> pa.Schema:
    """Canonical event columns (``data.schema.EVENTS``, int64 ids), the context column ``tab`` and,
    with ``truth``, the true probabilities."""
    fields = [pa.field(c.name, pl.Series(dtype=c.dtypes[0]).to_arrow().type) for c in EVENTS.columns]
    fields.append(pa.field("tab", pa.int64()))
    if truth:
        fields += [pa.field(name, pa.float32()) for name in TRUTH_COLUMNS]
    return pa.schema(fields)


def write_table(table: pa.Table, path: Path) -> None:
    """Write one table as a single Parquet file."""
    pq.write_table(table, path, compression=COMPRESSION)


def partition_path(day: dt.date, part: int) -> str:
    """Path of a part file relative to the events directory."""
    return f"date={day.isoformat()}/part-{part:05d}.parquet"


class PartitionedWriter:
    """Streams chunks into day partitions; a new (day, part) closes the previous file."""

    def __init__(self, root: Path, schema: pa.Schema) -> None:
        self.root = root
        self.schema = schema
        self.rows: dict[str, int] = {}
        self._key: tuple[dt.date, int] | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, day: dt.date, part: int, table: pa.Table) -> None:
        if self._key != (day, part):
            self.close()
            rel = partition_path(day, part)
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.root / rel, self.schema, compression=COMPRESSION)
            self._key = (day, part)
            self.rows[rel] = 0
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows[partition_path(day, part)] += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._key = None

    def __enter__(self) -> PartitionedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
