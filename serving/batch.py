"""Batch scoring: candidate chunks in, Parquet out (every input column + ``p_<task>`` + ``score``),
unscorable rows to a rejects file with a reason; ``input = scored + rejected`` always holds.

Both files are written chunk by chunk with ``pyarrow.parquet.ParquetWriter`` to temporary names and
renamed at the end, so an interrupted run leaves no half-written output under the final names.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from serving.candidates import NON_FINITE, REASON, reject_reason
from serving.errors import CandidateError
from serving.scorer import Scorer


@dataclass
class BatchReport:
    input_rows: int = 0
    scored_rows: int = 0
    rejected_rows: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    missing_rows: dict[str, int] = field(default_factory=dict)
    oov: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    model_version: str = ""
    output: str = ""
    rejects: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ParquetSink:
    """Appends DataFrames to one Parquet file (first frame fixes the schema); ``commit`` renames the
    temporary file onto ``path``, ``abort`` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.writer.write_table(table.cast(self.schema))

    def commit(self, empty: pl.DataFrame) -> None:
        """Close and rename; with no rows written, write ``empty`` (0 rows, the output schema)."""
        if self.writer is None:
            self.write(empty)
        assert self.writer is not None
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + int(v)


def score_chunks(
    scorer: Scorer,
    chunks: Iterable[pl.DataFrame],
    output: str | Path,
    rejects: str | Path,
    *,
    total_rows: int | None = None,
    progress: bool = False,
) -> BatchReport:
    """Score every chunk with ``scorer``; write scored rows to ``output`` and rejects to ``rejects``."""
    out_sink, rej_sink = ParquetSink(Path(output)), ParquetSink(Path(rejects))
    report = BatchReport(model_version=scorer.version, output=str(output), rejects=str(rejects))
    reasons: Counter[str] = Counter()
    added = scorer.output_columns()
    first: pl.DataFrame | None = None
    t0 = time.perf_counter()
    bar = tqdm(total=total_rows, unit="rows", unit_scale=True, desc="score", disable=not progress, mininterval=1.0)
    try:
        for chunk in chunks:
            if first is None:
                clash = [c for c in [*added, REASON] if c in chunk.columns]
                if clash:
                    raise CandidateError(f"candidates already have column(s) {clash} that scoring adds; rename them")
                first = chunk.head(0)
            reason = reject_reason(chunk)
            ok = reason.is_null().to_numpy()
            everyone = bool(ok.all())
            good = chunk if everyone else chunk.filter(pl.Series(ok))
            scored = scorer.score(good)
            finite = np.isfinite(scored.probabilities).all(axis=1) & np.isfinite(scored.score)
            columns = [pl.Series(f"p_{t}", scored.probabilities[:, k]) for k, t in enumerate(scorer.task_names)]
            out = good.with_columns(*columns, pl.Series(added[-1], scored.score))
            all_finite = bool(finite.all())
            out_sink.write(out if all_finite else out.filter(pl.Series(finite)))
            if everyone and all_finite:
                bad = chunk.head(0)
            else:
                bad = pl.concat(
                    [
                        chunk.filter(pl.Series(~ok)).with_columns(reason.filter(pl.Series(~ok))),
                        good.filter(pl.Series(~finite)).with_columns(pl.lit(NON_FINITE).alias(REASON)),
                    ]
                )
            if bad.height:
                rej_sink.write(bad)
                reasons.update(bad[REASON].to_list())
            report.input_rows += chunk.height
            report.scored_rows += int(finite.sum())
            _add(report.missing_rows, scored.encoded.missing_rows)
            _add(report.oov, scored.encoded.oov)
            bar.update(chunk.height)
        template = first if first is not None else pl.DataFrame()
        prob_cols = [pl.lit(None, dtype=pl.Float32).alias(c) for c in added[:-1]]
        out_sink.commit(template.with_columns(*prob_cols, pl.lit(None, dtype=pl.Float64).alias(added[-1])))
        rej_sink.commit(template.with_columns(pl.lit(None, dtype=pl.String).alias(REASON)))
    except BaseException:
        out_sink.abort()
        rej_sink.abort()
        raise
    finally:
        bar.close()
    report.rejected_rows = sum(reasons.values())
    report.rejects_by_reason = dict(sorted(reasons.items()))
    report.seconds = round(time.perf_counter() - t0, 3)
    report.rows_per_s = round(report.input_rows / max(report.seconds, 1e-9), 1)
    if report.scored_rows + report.rejected_rows != report.input_rows:
        raise AssertionError(
            f"batch scoring lost rows: {report.input_rows} in, {report.scored_rows} scored, "
            f"{report.rejected_rows} rejected"
        )
    return report
