"""Parity gate of an export: the ONNX graph must reproduce the PyTorch model on real rows.

The rows are the first rows of the ETL output's ``test`` split (:func:`parity_rows`).

The reference is the model's *training* forward (TorchRec ``EmbeddingBagCollection`` over a
KeyedJaggedTensor, then ``sigmoid``), not the export module, so a fault anywhere on the export path
(plain-op pooling, tracing, onnxruntime kernels) shows up as a difference. Any non-finite probability
on either side fails the gate (NaN weights give NaN on both sides, and NaN never compares equal).
The ONNX side runs through :func:`aptrank.serving.onnx_model.load_onnx`'s session, exactly as the
scorers run it. This module imports torch: it runs at export time, never on the scoring path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aptrank.data.spec import INPUT_NAMES, FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.feature_batch import FeatureBatch
from aptrank.serving.onnx_model import OnnxModel

PARITY_ROWS = 10_000
PARITY_TOLERANCE = 1e-5
PARITY_BATCH = 4096


class ParityError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch model within the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """Largest |p_onnx - p_torch| over ``rows`` rows, overall and per task; ``non_finite`` counts
    probabilities that are NaN/inf on either side."""

    rows: int
    tolerance: float
    max_abs_diff: float
    per_task: dict[str, float]
    non_finite: int

    @property
    def passed(self) -> bool:
        return self.rows > 0 and self.non_finite == 0 and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def torch_probabilities(
    model: MultiTaskModel, arrays: Mapping[str, np.ndarray], batch_size: int = PARITY_BATCH
) -> np.ndarray:
    """Probabilities float32 [B, K] of ``model`` on the training path, in eval mode, batch by batch."""
    n = int(arrays[INPUT_NAMES[0]].shape[0])
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                part = {
                    k: torch.from_numpy(np.ascontiguousarray(arrays[k][start : start + batch_size]))
                    for k in INPUT_NAMES
                }
                out.append(torch.sigmoid(model(FeatureBatch(**part))).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, len(model.task_names)), np.float32)


def compare(expected: np.ndarray, got: np.ndarray, task_names: Sequence[str], tolerance: float) -> ParityReport:
    """Parity figures of two probability matrices of the same shape."""
    if expected.shape != got.shape:
        raise ParityError(f"parity: PyTorch gives {expected.shape}, ONNX gives {got.shape}")
    bad = ~(np.isfinite(expected) & np.isfinite(got))
    diff = np.where(bad, 0.0, np.abs(expected.astype(np.float64) - got.astype(np.float64)))
    per_task = {t: float(diff[:, k].max(initial=0.0)) for k, t in enumerate(task_names)}
    return ParityReport(int(expected.shape[0]), tolerance, float(diff.max(initial=0.0)), per_task, int(bad.sum()))


def check_parity(
    model: MultiTaskModel, onnx_model: OnnxModel, arrays: Mapping[str, np.ndarray], tolerance: float = PARITY_TOLERANCE
) -> ParityReport:
    """Compare on ``arrays`` (the model input layout); raise :class:`ParityError` when the gate fails."""
    if list(onnx_model.task_names) != list(model.task_names):
        raise ParityError(f"parity: ONNX tasks {list(onnx_model.task_names)} != model tasks {model.task_names}")
    expected = torch_probabilities(model, arrays)
    got = (
        np.concatenate(
            [
                onnx_model.predict({k: v[s : s + PARITY_BATCH] for k, v in arrays.items()})
                for s in range(0, expected.shape[0], PARITY_BATCH)
            ]
        )
        if expected.shape[0]
        else expected
    )
    report = compare(expected, got, model.task_names, tolerance)
    if not report.passed:
        what = (
            f"{report.non_finite} non-finite probabilities"
            if report.non_finite
            else "no rows to compare"
            if report.rows == 0
            else f"max |p_onnx - p_torch| = {report.max_abs_diff:.3g} > {tolerance:g} (per task {report.per_task})"
        )
        raise ParityError(f"parity check failed on {report.rows} rows: {what}; the model is not exported")
    return report


def parity_rows(features: str | Path, spec: FeatureSpec, rows: int = PARITY_ROWS) -> dict[str, np.ndarray]:
    """Model input arrays of the first ``rows`` rows of the ETL output's ``test`` split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aptrank.data.tensors import model_inputs

    files = sorted((Path(features) / "test").rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{Path(features) / 'test'}: no Parquet files; the parity check needs the ETL's test split"
        )
    batches, held = [], 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=min(rows, 65_536)):
            batches.append(batch.slice(0, rows - held))
            held += batches[-1].num_rows
            if held >= rows:
                return model_inputs(pa.Table.from_batches(batches), spec)
    return model_inputs(pa.Table.from_batches(batches), spec)
