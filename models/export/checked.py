"""Export a trained model to ONNX behind the parity gate; nothing reaches ``out`` unless it passes.

The graph is written by :func:`~aptrank.models.export.graph.export_onnx` (plain-tensor inputs,
dynamic batch axis, FeatureSpec and task list in the metadata) to a temporary file next to ``out``,
reloaded with onnxruntime exactly as the scorers load it (:func:`aptrank.serving.onnx_model.load_onnx`),
compared with the PyTorch model (:mod:`aptrank.models.export.parity`), and only then renamed onto
``out`` (``os.replace`` is atomic on one file system). A failed gate leaves ``out`` as it was and
raises :class:`ParityError`; so does a graph with NaN/Inf weights even when its outputs on the
parity rows are finite (issue #20). The content digest is written beside ``out`` as
``<out>.sha256`` (:mod:`aptrank.serving.model_integrity`) before the rename, so a crash between the
two leaves a model its scorers refuse rather than one they trust unchecked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.export.fold import FOLD_MAX_ROWS
from aptrank.models.export.graph import export_onnx
from aptrank.models.export.parity import PARITY_TOLERANCE, ParityError, ParityReport, check_parity
from aptrank.serving.errors import ModelLoadError
from aptrank.serving.model_integrity import check_finite, content_digest, write_sidecar
from aptrank.serving.onnx_model import load_onnx


@dataclass(frozen=True)
class ExportResult:
    path: Path
    parity: ParityReport
    spec_hash: str
    task_names: tuple[str, ...]


def export_checked(
    model: MultiTaskModel,
    spec: FeatureSpec,
    out: str | Path,
    rows: Mapping[str, np.ndarray],
    tolerance: float = PARITY_TOLERANCE,
    *,
    fold_rows: int | None = None,
) -> ExportResult:
    """Export ``model`` to ``out`` if its ONNX graph matches it on ``rows`` within ``tolerance``
    (``fold_rows``: :class:`~aptrank.models.export.graph.ExportModule`'s table folding; 0 = off, None = its default
    ``FOLD_MAX_ROWS``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.onnx")
    try:
        export_onnx(model, tmp, spec, FOLD_MAX_ROWS if fold_rows is None else fold_rows)
        digest = content_digest(tmp)
        report = check_parity(model, load_onnx(tmp, expected_sha256=digest, allow_non_finite=True), rows, tolerance)
        try:
            check_finite(tmp)
        except ModelLoadError as e:
            raise ParityError(f"export refused: {e}") from e
        write_sidecar(out, digest)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return ExportResult(out, report, spec.hash, tuple(model.task_names))
