"""``DIR/summary.json``: row accounting, reject and duplicate rates, gates, label rates, content hash.

The content hash is :func:`data.digests.files_digest` over every output file except
``summary.json``, in sorted path order. The same input and config give the same hash, which proves
the ETL idempotent; ``summary.json`` itself also holds wall time and so is not hashed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.digests import files_digest
from aptrank.data.etl.labels import label_column
from aptrank.data.etl.splits import SPLIT, SPLITS
from aptrank.data.etl.validate import DUPLICATE, REASONS, VALIDITY_REASONS

SUMMARY = "summary.json"


def content_hash(out_dir: Path, names: Sequence[str]) -> str:
    """:func:`data.digests.files_digest` over the files and folders ``names`` (top level of
    ``out_dir``) in sorted path order, summary excluded."""
    found = [q for n in names for q in ([out_dir / n] if (out_dir / n).is_file() else (out_dir / n).rglob("*"))]
    files = sorted(
        (q for q in found if q.is_file() and q.relative_to(out_dir).as_posix() != SUMMARY),
        key=lambda q: q.relative_to(out_dir).as_posix(),
    )
    return files_digest(out_dir, files)


def reject_accounting(
    counts: dict[str, int], input_rows: int, max_reject_rate: float, max_duplicate_rate: float
) -> dict[str, Any]:
    """Counts per reason (every reason listed), the two rates and the gate verdicts."""
    by_reason = {r: int(counts.get(r, 0)) for r in REASONS}
    validity = sum(by_reason[r] for r in VALIDITY_REASONS)
    rejected = validity + by_reason[DUPLICATE]
    validity_rate = validity / input_rows if input_rows else 0.0
    duplicate_rate = by_reason[DUPLICATE] / input_rows if input_rows else 0.0
    failures = []
    if validity_rate > max_reject_rate:
        top = sorted((r for r in VALIDITY_REASONS if by_reason[r]), key=lambda r: -by_reason[r])[:3]
        reasons = ", ".join(f"{r} {by_reason[r]}" for r in top)
        failures.append(
            f"validity reject rate {validity_rate:.4%} exceeds --max-reject-rate {max_reject_rate:.4%} "
            f"(top reasons: {reasons})"
        )
    if duplicate_rate > max_duplicate_rate:
        failures.append(
            f"duplicate impression rate {duplicate_rate:.4%} exceeds --max-duplicate-rate {max_duplicate_rate:.4%} "
            f"({by_reason[DUPLICATE]} later copies of (user_id, item_id, ts))"
        )
    return {
        "input_rows": input_rows,
        "accepted_rows": input_rows - rejected,
        "rejected_rows": rejected,
        "rejects_by_reason": by_reason,
        "validity_rejected_rows": validity,
        "validity_reject_rate": validity_rate,
        "duplicate_rows": by_reason[DUPLICATE],
        "duplicate_rate": duplicate_rate,
        "max_reject_rate": max_reject_rate,
        "max_duplicate_rate": max_duplicate_rate,
        "gates": {"passed": not failures, "failures": failures},
    }


def label_rates(events: pl.LazyFrame, tasks: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Label rate per split (and ``all``) per task, and rows per split; ``events`` has ``_split``."""
    labels = [pl.col(label_column(t)).cast(pl.Float64).mean().alias(t) for t in tasks]
    per = events.group_by(SPLIT).agg(pl.len().alias("_rows"), *labels).sort(SPLIT).collect()
    overall = events.select(pl.len().alias("_rows"), *labels).collect().row(0, named=True)
    rates: dict[str, dict[str, float]] = {}
    rows: dict[str, int] = {}
    found = {r[SPLIT]: r for r in per.iter_rows(named=True)}
    for code, name in enumerate(SPLITS):
        r = found.get(code)
        rows[name] = int(r["_rows"]) if r else 0
        rates[name] = {t: (float(r[t]) if r else 0.0) for t in tasks}
    rows["all"] = int(overall["_rows"])
    rates["all"] = {t: float(overall[t] or 0.0) for t in tasks}
    return rates, rows


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
