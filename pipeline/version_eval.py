"""Evaluate a registered model version on a split of an ETL output, as it is served (issue #20).

The gate compares a challenger with the champion on the challenger's evaluation window. When the
champion was evaluated on another window (yesterday's data), its recorded AUCs are not comparable,
so it is rescored here: the version's ONNX model and the feature snapshot registered with it score
the split's raw candidates (``user_id``, ``item_id``, ``ts`` and the context columns) exactly as
``aptrank score`` would (:func:`aptrank.pipeline.scoring.load_scorer`), and the AUC per task
(Hanley & McNeil, Radiology 1982) is taken against the split's labels.

This is the one function for "evaluate version V on split S"; the registered-model issue's served
evaluation can replace its body without touching the gate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from aptrank.pipeline.ranking_metrics import auc


class VersionEvalError(ValueError):
    """A version cannot be evaluated on the split (no rows, or none scorable)."""


def raw_context(frame: pl.DataFrame, spec: object, features: Path, columns: list[str]) -> pl.DataFrame:
    """``frame`` with each context column mapped from its vocabulary index (as the ETL split stores
    it) back to the raw value; index 0 (out of vocabulary) becomes null."""
    from aptrank.data.encodings import Vocab

    by_name = {f.name: f for f in spec.categorical}  # type: ignore[attr-defined]
    out = []
    for column in columns:
        feature = by_name.get(column)
        if feature is None or not isinstance(feature.encoding, Vocab):
            raise VersionEvalError(f"{features}: context column '{column}' is not a vocabulary-encoded feature")
        values = feature.encoding.load(features).lookup.values
        index = pl.Series(range(1, values.len() + 1), dtype=frame[column].dtype)
        out.append(pl.col(column).replace_strict(index, values, default=None, return_dtype=values.dtype))
    return frame.with_columns(out) if out else frame


def evaluate_version(
    model_uri: str,
    tracking_uri: str | None,
    features: str | Path,
    split: str,
    snapshot: str | Path | None = None,
) -> dict[str, float]:
    """task -> AUC of the model at ``model_uri`` (``models:/NAME/N``, or an ONNX file) on ``split`` of
    ``features``; ``snapshot``: the model's own ETL output (default: the one registered with it)."""
    from aptrank.data.etl.labels import label_column
    from aptrank.data.etl.run import example_files
    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.scoring import load_scorer

    files = example_files(features, split)
    if not files:
        raise VersionEvalError(f"{features}: split '{split}' has no example files to evaluate {model_uri} on")
    spec = FeatureSpec.read(features)
    with load_scorer(model_uri, features=snapshot, tracking_uri=tracking_uri) as scorer:
        wanted = ["user_id", "item_id", "ts", *list(scorer.scorer.features.context)]
        labels = [label_column(t) for t in scorer.task_names]
        missing = [t for t in scorer.task_names if t not in spec.task_names]
        if missing:
            raise VersionEvalError(f"{features}: has no labels for {model_uri}'s task(s) {missing}")
        candidates = pl.concat([pl.read_parquet(f, columns=[*dict.fromkeys(wanted + labels)]) for f in files])
        candidates = raw_context(candidates, spec, Path(features), list(scorer.scorer.features.context))
        scored = scorer.score_frame(candidates).scored
    if scored.height == 0:
        raise VersionEvalError(f"{features}: no row of split '{split}' could be scored by {model_uri}")
    return {
        t: auc(scored[label_column(t)].to_numpy().astype(np.float64), scored[f"p_{t}"].to_numpy())
        for t in scorer.task_names
    }
