"""Output files: encoded example chunks appended to ``DIR/<split>/part-NNNNN.parquet``, and the
single-table outputs (:func:`write_frame`).

Each chunk becomes one Parquet row group; a new part file starts once a file holds
``rows_per_file`` rows. Chunks arrive in row order, so the parts of a split read in name order give
the split's rows in (ts, input row) order. A split without rows still gets one (empty) part with
the full schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from aptrank.data.etl.config import OutputConfig

WRITE_BATCH_ROWS = 1 << 16
DATA_PAGE_BYTES = 8 << 20


def write_frame(frame: pl.DataFrame, path: Path, output: OutputConfig) -> None:
    """Write one output table (rejects, vocabulary, snapshot) with the configured compression."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(
        path, compression=output.compression, compression_level=output.level, row_group_size=output.row_group_size
    )


def file_groups(chunks: Sequence[tuple[int, int]], chunk_rows: int, rows_per_file: int) -> list[list[tuple[int, int]]]:
    """The (offset, rows) chunks of a split grouped by the part file :class:`PartWriter` puts them
    in: a file takes whole chunks until it holds ``rows_per_file`` rows, i.e. ceil(rows_per_file /
    chunk_rows) chunks (every chunk but the split's last has ``chunk_rows`` rows). Part j of a split
    can so be written by ``PartWriter(folder, output, first_part=j)`` independently of the others,
    with the same bytes as one writer going through the whole split."""
    per_file = -(-rows_per_file // chunk_rows)
    return [list(chunks[i : i + per_file]) for i in range(0, len(chunks), per_file)]


class PartWriter:
    """Appends chunks to a split's part files. Parquet encoding runs in a background thread
    (pyarrow releases the GIL), so the next chunk is built while this one is written; at most one
    chunk waits, and chunks are written in the order given."""

    def __init__(self, folder: Path, output: OutputConfig, first_part: int = 0) -> None:
        self.folder, self.rows_per_file = folder, output.rows_per_file
        self.compression = "none" if output.compression == "uncompressed" else output.compression  # pyarrow's name
        self.level = output.level
        self.parts = first_part
        self.rows_in_part = 0
        self.writer: pq.ParquetWriter | None = None
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: Future[None] | None = None

    def write(self, chunk: pl.DataFrame) -> None:
        self._wait()
        self.pending = self.pool.submit(self._write, chunk)

    def _write(self, chunk: pl.DataFrame) -> None:
        table = chunk.to_arrow()
        if self.writer is None or (self.rows_in_part >= self.rows_per_file and chunk.height):
            self._close_file()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"part-{self.parts:05d}.parquet"
            # no dictionary pages: ~35% less CPU to write; zstd/lz4 still compress repeated values.
            # Large write batches and data pages: ~20% less CPU than pyarrow's defaults (1024-row
            # batches, 1 MiB pages), which pay a per-batch and per-page cost on every column.
            self.writer = pq.ParquetWriter(
                path,
                table.schema,
                compression=self.compression,
                compression_level=self.level,
                use_dictionary=False,
                write_batch_size=WRITE_BATCH_ROWS,
                data_page_size=DATA_PAGE_BYTES,
            )
            self.parts += 1
            self.rows_in_part = 0
        self.writer.write_table(table, row_group_size=max(chunk.height, 1))
        self.rows_in_part += chunk.height

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()  # re-raises a failed write
        self.pending = None

    def _close_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._close_file()
            self.pool.shutdown()
