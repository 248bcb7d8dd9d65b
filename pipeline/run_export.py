"""Export a trained run to ONNX behind the parity gate: the library behind ``aptrank export``, the
job's export step and :func:`aptrank.export`.

The run is loaded and rebuilt (:mod:`aptrank.pipeline.runs`), its parity rows are the first rows of
the ETL output's ``test`` split, and :func:`aptrank.models.export.export_checked` writes ``out`` only
when every probability matches PyTorch within the tolerance.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aptrank.models.export.parity import PARITY_ROWS, PARITY_TOLERANCE

if TYPE_CHECKING:
    from aptrank.models.export import ExportResult


@dataclass(frozen=True)
class RunExport:
    """An exported run: where it came from (``runs:/ID`` or the run folder) and the export result."""

    source: str
    result: ExportResult


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    features: str | Path | None = None,
    parity_rows: int = PARITY_ROWS,
    tolerance: float = PARITY_TOLERANCE,
    tracking_uri: str | None = None,
    fold_rows: int | None = None,
) -> RunExport:
    """Export ``run`` (a run folder or an MLflow run id) to ``out``; ``features``: the ETL output it
    was trained on (default: the run's own). Raises :class:`~aptrank.pipeline.runs.RunError` (bad run
    or features), ``ValueError`` (bad arguments), :class:`~aptrank.models.export.ParityError` (gate)."""
    from aptrank.models.export import export_checked
    from aptrank.models.export import parity_rows as sample_parity_rows
    from aptrank.pipeline.runs import RunError, build_trained_model, load_run

    if parity_rows < 1 or not tolerance >= 0 or (fold_rows is not None and fold_rows < 0):
        raise ValueError(
            f"export: --parity-rows must be >= 1 (got {parity_rows}), --tolerance >= 0 (got {tolerance}) "
            f"and --fold-rows >= 0 (got {fold_rows})"
        )
    with tempfile.TemporaryDirectory(prefix="aptrank-export-") as tmp:
        trained = load_run(str(run), tracking_uri, Path(tmp))
        feats = Path(features) if features is not None else trained.features
        if feats is None:
            raise RunError(f"run {trained.source}: no ETL output known; pass the features folder (--features)")
        model, spec = build_trained_model(trained, feats)
        rows = sample_parity_rows(feats, spec, parity_rows)
        result = export_checked(model, spec, out, rows, tolerance, fold_rows=fold_rows)
    return RunExport(trained.source, result)
