"""The registered model as the whole scorer: an MLflow ``python_function`` model over raw candidate rows.

Artifact layout of every registered version (``artifacts/`` of the MLflow model folder)::

    model.onnx        the parity-gated ONNX graph (encoded tensors -> task probabilities)
    model.onnx.sha256 its content digest, verified before the graph is loaded (issue #20)
    features/         feature_spec.json, vocab/, snapshot/: the ETL output the model was trained on,
                      its snapshot as of the end of all data (what production scores with)
    fusion.json       {"weights": {task: weight}}: the job's ``scoring.weights``

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a pandas DataFrame of raw candidates
(``user_id``, ``item_id``, ``ts`` as a datetime, naive = UTC, or epoch milliseconds, and the
FeatureSpec's context columns, e.g. ``tab``) and returns one row per candidate, in input order and
with the input's index: ``p_<task>`` (float32) per task and the fused ``score`` (float64). Columns
the signature does not name are ignored (not echoed back). The scoring is the project's own
:class:`serving.scorer.Scorer` (feature lookup :mod:`serving.features` over
:class:`data.snapshot.FeatureLookup`, onnxruntime, :class:`serving.fusion.Fusion`), so the pyfunc,
``aptrank score`` and ``aptrank serve`` give the same numbers. Loading and predicting import no torch.

MLflow docs: https://mlflow.org/docs/latest/ml/model/python_model/ (``PythonModel``, artifacts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import polars as pl

from aptrank.serving.fusion import FUSION_FILE, read_fusion
from aptrank.serving.model_integrity import sidecar

ONNX_ARTIFACT = "model.onnx"
FEATURES_ARTIFACT = "features"
ARTIFACTS_DIR = "artifacts"
TS = "ts"


@dataclass(frozen=True)
class ScorerFiles:
    """The three artifacts of a scorer model, as local paths."""

    onnx: Path
    features: Path
    fusion: Path

    def artifacts(self) -> dict[str, str]:
        """The ``artifacts=`` mapping of ``mlflow.pyfunc.log_model`` / ``save_model``; the graph's
        ``.sha256`` sidecar, when present, is saved beside it (``artifacts/model.onnx.sha256``)."""
        files = {ONNX_ARTIFACT: str(self.onnx), FEATURES_ARTIFACT: str(self.features), FUSION_FILE: str(self.fusion)}
        digest = sidecar(self.onnx)
        return {**files, digest.name: str(digest)} if digest.is_file() else files


def bundled_files(model_dir: str | Path) -> ScorerFiles | None:
    """The artifacts of a downloaded scorer model folder (``MLmodel`` + ``artifacts/``), or None
    when the folder is not one (e.g. a bare ONNX model)."""
    base = Path(model_dir) / ARTIFACTS_DIR
    files = ScorerFiles(base / ONNX_ARTIFACT, base / FEATURES_ARTIFACT, base / FUSION_FILE)
    return files if files.onnx.is_file() and files.features.is_dir() and files.fusion.is_file() else None


def candidates_frame(model_input: Any) -> pl.DataFrame:
    """A pandas (or Polars) frame of raw candidates as the lookup takes it: ``ts`` a UTC datetime
    in ms (naive datetimes are UTC; ISO strings are parsed; integers stay epoch ms)."""
    frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
    if TS not in frame.columns:
        return frame  # the scorer names the missing columns
    ts = frame[TS]
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC")
    if isinstance(ts.dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else ts.dt.convert_time_zone("UTC")
        ts = ts.dt.cast_time_unit("ms")
    return frame.with_columns(ts.alias(TS))


class RankerModel(mlflow.pyfunc.PythonModel):
    """Raw candidate rows -> ``p_<task>`` + ``score`` with the model's bundled snapshot and weights."""

    def load_context(self, context: Any) -> None:
        from aptrank.serving.scorer import load_scorer

        artifacts = context.artifacts
        self.scorer = load_scorer(
            artifacts[ONNX_ARTIFACT], artifacts[FEATURES_ARTIFACT], weights=read_fusion(artifacts[FUSION_FILE])
        )

    def predict(self, context, model_input, params=None):
        """``p_<task>`` + ``score`` for the pandas frame ``model_input`` (module docstring)."""
        import pandas as pd

        scored = self.scorer.score(candidates_frame(model_input))
        columns = self.scorer.output_columns()
        data: dict[str, Any] = {c: scored.probabilities[:, k] for k, c in enumerate(columns[:-1])}
        data[columns[-1]] = scored.score
        return pd.DataFrame(data, index=getattr(model_input, "index", None))
