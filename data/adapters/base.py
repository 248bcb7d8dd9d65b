"""What every source adapter returns, and the checks adapters share.

An adapter turns a source's files into :class:`CanonicalTables` (lazy Polars frames in the canonical
schema of :mod:`data.schema`). It never filters rows: validation (and the reject file) is the ETL's
job, so ``rows in == rows out`` for every adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.schema import EVENTS, ITEMS, USERS, TableSchema, check_schema

INTEGER_DTYPES: tuple[pl.DataType, ...] = (
    pl.Int8(),
    pl.Int16(),
    pl.Int32(),
    pl.Int64(),
    pl.UInt8(),
    pl.UInt16(),
    pl.UInt32(),
    pl.UInt64(),
)
FLOAT_DTYPES: tuple[pl.DataType, ...] = (pl.Float32(), pl.Float64())


class SourceError(ValueError):
    """A source cannot be read: unknown name, missing file, missing or mistyped column."""


@dataclass
class CanonicalTables:
    """Canonical events (always), items and users (when the source has them), lazily.

    ``files`` names the file(s) behind each table so later errors can point at them.
    """

    events: pl.LazyFrame
    items: pl.LazyFrame | None = None
    users: pl.LazyFrame | None = None
    files: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Assert the canonical schema on every present table (raises SchemaError)."""
        tables: list[tuple[TableSchema, pl.LazyFrame | None]] = [
            (EVENTS, self.events),
            (ITEMS, self.items),
            (USERS, self.users),
        ]
        for schema, frame in tables:
            if frame is not None:
                check_schema(frame.collect_schema(), schema, self.files.get(schema.table, schema.table))


def find_one(directory: Path, patterns: Sequence[str], what: str, required: bool = True) -> list[Path]:
    """Files in ``directory`` matching the first pattern that matches anything (sorted).

    Raises :class:`SourceError` naming the directory and the patterns when ``required`` and none match.
    """
    if not directory.is_dir():
        raise SourceError(f"{directory}: not a directory (expected the folder holding the {what})")
    for pattern in patterns:
        hits = sorted(p for p in directory.glob(pattern) if p.is_file())
        if hits:
            return hits
    if required:
        raise SourceError(f"{directory}: no {what} file found (looked for {', '.join(patterns)})")
    return []


VERIFY_THREADS = 2
"""Files read at a time by :func:`verify_parquet` (pyarrow decodes without the GIL)."""


def verify_parquet(paths: Sequence[Path]) -> None:
    """Read every page of every file once with pyarrow, verifying page CRC-32 checksums where the
    writer stored them (Parquet format spec, ``PageHeader.crc``), and check the files share one
    schema; raise :class:`SourceError` naming the file for a truncated, empty, corrupt or
    non-Parquet file (issue #20: Polars would otherwise fail later naming no file, or read a
    corrupted page silently). Files are read :data:`VERIFY_THREADS` at a time; the error names the
    first bad file in path order, as a serial read would."""
    with ThreadPoolExecutor(VERIFY_THREADS) as pool:
        schemas = list(pool.map(_verified_schema, paths))  # re-raises the first failure in path order
    for path, schema in zip(paths[1:], schemas[1:], strict=True):
        if not schema.equals(schemas[0]):
            raise SourceError(
                f"{path}: schema differs from {paths[0]} (files of one table need one schema): "
                f"{_columns(schema)} vs {_columns(schemas[0])}"
            )


def _verified_schema(path: Path) -> Any:
    """The Arrow schema of one Parquet file, once every page of it was read (:func:`verify_parquet`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path, page_checksum_verification=True)
        for group in range(reader.num_row_groups):
            reader.read_row_group(group)
    except (pa.ArrowException, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"{path}: unreadable Parquet file ({reason})") from e
    return reader.schema_arrow.remove_metadata()


def _columns(schema: Any) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def scan(paths: Sequence[Path]) -> pl.LazyFrame:
    """Lazily scan Parquet (after :func:`verify_parquet`) or CSV files (one format per call),
    concatenated in path order."""
    if all(p.suffix == ".parquet" for p in paths):
        verify_parquet(paths)
        return pl.scan_parquet([str(p) for p in paths], hive_partitioning=False)
    if all(p.suffix == ".csv" for p in paths):
        return pl.concat([pl.scan_csv(p, infer_schema_length=None) for p in paths], how="vertical")
    raise SourceError(f"mixed or unsupported file types: {[str(p) for p in paths]} (Parquet or CSV)")


def require_raw_columns(frame: pl.LazyFrame, source: str, columns: Mapping[str, tuple[pl.DataType, ...]]) -> pl.Schema:
    """Check a raw source's own columns before mapping (name, dtype family); return its schema."""
    schema = frame.collect_schema()
    for name, dtypes in columns.items():
        if name not in schema:
            raise SourceError(f"{source}: missing required column '{name}' (expected {_describe(dtypes)})")
        if not any(schema[name] == d for d in dtypes):
            raise SourceError(f"{source}: column '{name}' has dtype {schema[name]}, expected {_describe(dtypes)}")
    return schema


def _describe(dtypes: tuple[pl.DataType, ...]) -> str:
    if dtypes == INTEGER_DTYPES:
        return "an integer type"
    if dtypes == INTEGER_DTYPES + FLOAT_DTYPES:
        return "a numeric type"
    return " or ".join(str(d) for d in dtypes)
