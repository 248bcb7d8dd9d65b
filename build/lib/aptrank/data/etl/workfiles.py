"""The ETL's intermediate files (``DIR/_work/``) and the chunked raw example frames built from them.

Every per-event work file holds the accepted events in the same order (sorted by ts, then input
row), so a chunk of rows is the horizontal concatenation of the same row slice of each file: the
events with their attributes and labels, the point-in-time counts of each entity and the history
pointers; the history lists are gathered from the flat positive-item arrays per chunk. Working in
row chunks keeps memory bounded by the chunk size instead of the dataset. Work files are
uncompressed Arrow IPC: written at memory speed and read back by memory-mapped slices.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.data.etl.config import HistoryConfig
from aptrank.data.etl.history import end_column, length_column, lists_for

EVENTS = "events.arrow"
POINTERS = "pointers.arrow"


def pit_file(entity: str) -> str:
    return f"pit_{entity}.arrow"


def chunk_ranges(offset: int, length: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces of at most ``size`` rows covering [offset, offset + length)."""
    for start in range(offset, offset + length, size):
        yield start, min(size, offset + length - start)


@dataclass
class WorkFiles:
    root: Path
    entities: list[str]
    histories: tuple[HistoryConfig, ...]
    history_items: dict[str, np.ndarray] = field(default_factory=dict)
    """Per history: the flat encoded item ids of its positives (see :mod:`data.etl.history`)."""

    def write(self, frame: pl.DataFrame, name: str) -> None:
        frame.write_ipc(self.root / name, compression="uncompressed")

    def frame(self, name: str, columns: Collection[str] | None = None) -> pl.DataFrame:
        """A work file (``columns`` of it, when given) as a memory-mapped frame: row slices of it
        are zero-copy views and only the pages read count towards memory. Not cached, so that the
        mapping (and its resident pages) is released with the last slice."""
        path = self.root / name
        if columns is not None:
            columns = [c for c in pl.read_ipc_schema(path) if c in columns]
        return pl.read_ipc(path, columns=columns, memory_map=True)

    def scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_ipc(self.root / name, memory_map=True)

    def per_event_files(self) -> list[str]:
        return [EVENTS, *[pit_file(e) for e in self.entities], *([POINTERS] if self.histories else [])]

    def raw_chunk(
        self, offset: int, length: int, lists: bool = True, columns: Collection[str] | None = None
    ) -> pl.DataFrame:
        """Raw example rows [offset, offset + length): attributes, labels, counts and (with
        ``lists``) the history list columns; only ``columns`` when given."""
        parts = []
        for name in self.per_event_files():
            parts.append(self.frame(name, columns).slice(offset, length))
        frame = pl.concat(parts, how="horizontal", strict=True)
        if lists:
            frame = frame.with_columns(lists_for(frame, self.history_items[h.name], h) for h in self.histories)
        return frame.drop(*[c for h in self.histories for c in (end_column(h), length_column(h))], strict=False)
