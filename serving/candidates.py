"""Candidate rows for batch scoring: read through the source adapters, in bounded chunks, with reject rules.

* ``kuairand``: a KuaiRand folder (``log_*.parquet|csv``), mapped onto canonical columns by
  :mod:`data.adapters.kuairand` (the one place that reads KuaiRand's own column names); its required
  log columns apply.
* ``canonical``: Parquet or CSV already in canonical column names (``user_id``, ``item_id``, ``ts``,
  context columns; labels optional): a file, a folder of files (any depth), or the canonical
  adapter's layout (``events/`` or ``events.parquet``). Files are scanned with the adapters' own
  :func:`data.adapters.base.scan`; a CSV's ``ts`` (ISO-8601 text or epoch ms) is parsed to the
  canonical timestamp (:func:`with_canonical_ts`).

Rows are streamed with Polars' streaming engine (``LazyFrame.collect_batches``) so memory follows the
chunk size, not the input size. A row that cannot be scored gets the first failing reason of
:data:`REJECT_RULES` (fixed order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from aptrank.data.adapters import load_source
from aptrank.data.adapters.base import SourceError, scan
from aptrank.serving.errors import CandidateError

SOURCES: tuple[str, ...] = ("kuairand", "canonical")
REASON = "reason"
REJECT_RULES: tuple[tuple[str, str], ...] = (
    ("missing_user_id", "user_id"),
    ("missing_item_id", "item_id"),
    ("missing_ts", "ts"),
)
"""(reason, column): the row is rejected when the column is null."""
NON_FINITE = "non_finite_score"
"""Reason for rows whose model output is NaN/inf (never expected; counted, not written as scores)."""


def canonical_files(path: Path) -> list[Path]:
    """The candidate files of a canonical input ``path`` (a file, or the first layout of a folder that
    has files), in name order; :class:`SourceError` when there are none."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"{path}: candidates input does not exist")
    for pattern in ("events/**/*.parquet", "events.parquet", "**/*.parquet", "**/*.csv"):
        files = sorted(p for p in path.glob(pattern) if p.is_file())
        if files:
            return files
    raise SourceError(f"{path}: no candidate files (looked for events/**/*.parquet, events.parquet, *.parquet, *.csv)")


def with_canonical_ts(frame: pl.LazyFrame) -> pl.LazyFrame:
    """``ts`` as the canonical ``Datetime(ms, UTC)``: CSV gives ISO-8601 strings (read as UTC when
    they carry no offset) or epoch milliseconds; an unparseable value becomes null, so its row is
    rejected as ``missing_ts`` instead of failing the run."""
    dtype = frame.collect_schema().get("ts")
    if dtype == pl.String:
        parsed = pl.col("ts").str.to_datetime(time_unit="ms", time_zone="UTC", strict=False)
        return frame.with_columns(parsed.alias("ts"))
    if dtype is not None and dtype.is_integer():
        return frame.with_columns(pl.from_epoch(pl.col("ts"), time_unit="ms").dt.replace_time_zone("UTC"))
    return frame


def scan_candidates(source: str, path: str | Path) -> pl.LazyFrame:
    """Lazy candidate rows of ``source`` at ``path`` in canonical column names."""
    p = Path(path)
    if source == "kuairand":
        return load_source(source, p).events
    if source == "canonical":
        return with_canonical_ts(scan(canonical_files(p)))
    raise SourceError(f"--source '{source}': unknown; known: {', '.join(SOURCES)}")


def count_rows(frame: pl.LazyFrame) -> int:
    """Row count (Parquet: read from the file metadata)."""
    return int(frame.select(pl.len()).collect().item())


def iter_chunks(frame: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    """DataFrames of at most ``rows`` rows, in input order, streamed."""
    if rows < 1:
        raise ValueError(f"chunk rows must be >= 1, got {rows}")
    for batch in frame.collect_batches(chunk_size=rows, maintain_order=True):
        for start in range(0, batch.height, rows):
            yield batch.slice(start, rows)


def require_columns(columns: list[str]) -> None:
    """:class:`CandidateError` unless every column of :data:`REJECT_RULES` is present."""
    missing = [c for _, c in REJECT_RULES if c not in columns]
    if missing:
        raise CandidateError(f"candidates lack required columns {missing} (have {columns})")


def reject_reason(frame: pl.DataFrame) -> pl.Series:
    """Per row the first failing rule of :data:`REJECT_RULES`, or null when the row can be scored."""
    require_columns(frame.columns)
    expr = pl.lit(None, dtype=pl.String)
    for reason, column in reversed(REJECT_RULES):
        expr = pl.when(pl.col(column).is_null()).then(pl.lit(reason)).otherwise(expr)
    return frame.select(expr.alias(REASON)).to_series()
