"""Canonical adapter: files already in aptrank's canonical schema (e.g. ``aptrank generate`` output).

Layout: ``events/`` (Parquet files, any depth, e.g. partitioned by day) or ``events.parquet``;
optional ``items.parquet`` and ``users.parquet``. Partition folder names are not read as columns.
"""

from __future__ import annotations

from pathlib import Path

from aptrank.data.adapters.base import CanonicalTables, SourceError, scan


def load(path: Path) -> CanonicalTables:
    if not path.is_dir():
        raise SourceError(f"{path}: not a directory (expected events/ or events.parquet, items.parquet, users.parquet)")
    event_files = sorted((path / "events").rglob("*.parquet")) if (path / "events").is_dir() else []
    if not event_files and (path / "events.parquet").is_file():
        event_files = [path / "events.parquet"]
    if not event_files:
        expected = f"{path / 'events'}/**/*.parquet or {path / 'events.parquet'}"
        raise SourceError(f"{path}: no events found (expected {expected})")
    files = {"events": str(path / "events") if len(event_files) > 1 else str(event_files[0])}
    tables = CanonicalTables(events=scan(event_files), files=files)
    for table in ("items", "users"):
        f = path / f"{table}.parquet"
        if f.is_file():
            files[table] = str(f)
            setattr(tables, table, scan([f]))
    tables.check()
    return tables
