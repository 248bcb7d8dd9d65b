"""Evaluate as you serve: score a split through the scorer model itself, with the snapshot serving had.

The trainer's test metrics use point-in-time features (each example's counts and histories as of its
own ``ts``), which serving never sees: ``aptrank score`` and ``aptrank serve`` read the snapshot
frozen at a cutoff. This second evaluation scores the split's real candidates (raw ``user_id``,
``item_id``, ``ts``, context columns) through ``mlflow.pyfunc.load_model(...).predict`` of the very
scorer model the job registers (:mod:`serving.pyfunc_model`), bundled with the snapshot as of the
split's start (for ``test``: the end of the validation split), which is what a model deployed at
that moment would have scored with. The registered version bundles the snapshot as of the end of all
data instead (production). The gap between the two figures is the cost of frozen features. With
``freshness: daily`` in the ETL config (:mod:`data.etl.freshness`) the training features of the
split's first day are that snapshot's values, so on a one-day split the two figures nearly coincide.

The snapshot is the ETL's own (:func:`data.etl.run.run_etl` with ``time_range.end`` at the split's
start); its FeatureSpec must equal the training one apart from the snapshot cutoff, which is
checked, and the training FeatureSpec (whose hash binds it to the model) is kept with it.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from aptrank.data.spec import FeatureSpec
from aptrank.pipeline.config import DataConfig, JobConfig
from aptrank.pipeline.scorer_model import ScorerModel, assemble, copy_features, raw_split_rows, to_pandas_candidates

SNAPSHOT = "snapshot"
SERVED = "served"
"""Value of the version tag ``aptrank.eval_features`` when its AUC tags are the served figures."""
TAG_PIT_AUC = "aptrank.pit_auc."  # + task: the trainer's point-in-time AUC on the same split
TAG_GAP = "aptrank.served_gap."  # + task: served AUC - point-in-time AUC
TAG_SNAPSHOT_CUTOFF = "aptrank.served_snapshot_cutoff"


class ServedEvaluationError(ValueError):
    """The split cannot be scored as served (no source events, FeatureSpec mismatch)."""


def _without_cutoff(spec: FeatureSpec) -> dict[str, Any]:
    d = spec.to_dict()
    d.pop("hash")
    d["extras"] = json.loads(json.dumps(d["extras"]))
    d["extras"]["snapshot"].pop("cutoff", None)
    return d


@dataclass(frozen=True)
class ServedSnapshot:
    """An ETL output (``features``: training FeatureSpec and vocabularies, snapshot as of a split's
    start) and that snapshot's ``cutoff``: what a scorer deployed at the split's start reads."""

    features: Path
    cutoff: str


def snapshot_as_of_split(data: DataConfig, features: Path, split: str, dest: Path) -> ServedSnapshot:
    """An ETL output under ``dest``: the training FeatureSpec and vocabularies of ``features`` with
    the snapshot as of the start of ``split`` (the ETL rerun on the events before it; ``data``: the
    job's ``data`` section, whose source, input and ETL config made ``features``). Shared by the
    job's served evaluation and the grid's (neural cells and the LightGBM baseline)."""
    from aptrank.data.etl.config import EtlConfig, load_config
    from aptrank.data.etl.run import run_etl

    spec = FeatureSpec.read(features)
    start = spec.extras.get("splits", {}).get(f"{split}_start")
    if start is None:
        raise ServedEvaluationError(f"{features}/feature_spec.json: extras.splits has no '{split}_start'")
    etl_cfg = load_config(data.etl_config) if data.etl_config else EtlConfig()
    local = dt.datetime.fromisoformat(start).astimezone(zoneinfo.ZoneInfo(etl_cfg.time_zone)).replace(tzinfo=None)
    cut = etl_cfg.model_copy(update={"time_range": etl_cfg.time_range.model_copy(update={"end": local.isoformat()})})
    etl_out = dest / "etl"
    rerun = run_etl(data.source, data.input, etl_out, cut).spec
    if not same_but_cutoff(rerun, spec):
        raise ServedEvaluationError(
            f"the ETL of {data.source}:{data.input} with data.etl_config {data.etl_config} cut at "
            f"{start} gives another FeatureSpec than {features} (apart from the snapshot cutoff): the "
            "features were not made by this job's ETL config"
        )
    return ServedSnapshot(
        with_snapshot_of(features, etl_out, dest / "features"), str(rerun.extras["snapshot"]["cutoff"])
    )


def same_but_cutoff(a: FeatureSpec, b: FeatureSpec) -> bool:
    """Whether two FeatureSpecs are equal apart from their snapshot cutoff (same features, vocabularies
    and statistics: one's snapshot tables can stand in for the other's)."""
    return _without_cutoff(a) == _without_cutoff(b)


def with_snapshot_of(features: Path, snapshot_source: Path, out: Path) -> Path:
    """A copy of the scorer part of ``features`` (its FeatureSpec, which binds it to its model) at
    ``out`` whose snapshot tables are those of ``snapshot_source``."""
    copy_features(features, out)
    for table in (out / SNAPSHOT).iterdir():
        table.unlink()
    for table in (snapshot_source / SNAPSHOT).iterdir():
        (out / SNAPSHOT / table.name).write_bytes(table.read_bytes())
    return out


def evaluate_served(
    cfg: JobConfig,
    features: Path,
    onnx_path: Path,
    weights: dict[str, float],
    split: str = "test",
    rows: pl.DataFrame | None = None,
    snapshot: ServedSnapshot | None = None,
) -> dict[str, Any]:
    """Metrics of the scorer model on ``split`` as served (module docstring): ``rows``, ``tasks``
    (per task AUC, GAUC, logloss, calibration), ``mean_auc`` and the ``snapshot_cutoff``.
    ``rows``: the split's raw rows when already read (:func:`raw_split_rows`); ``snapshot``: the
    split's snapshot when already made (:func:`snapshot_as_of_split`, e.g. once per grid dataset)."""
    import mlflow.pyfunc

    from aptrank.pipeline.evaluate import evaluate_predictions

    if rows is None:
        rows = raw_split_rows(cfg.data.source, cfg.data.input, features, split)
    spec = FeatureSpec.read(features)
    with tempfile.TemporaryDirectory(prefix="aptrank-served-eval-") as tmp:
        if snapshot is None:
            snapshot = snapshot_as_of_split(cfg.data, features, split, Path(tmp))
        files = assemble(onnx_path, snapshot.features, weights, Path(tmp) / "artifacts")
        candidates = to_pandas_candidates(rows, spec)
        path = ScorerModel(files, candidates.head(5)).save(Path(tmp) / "model")
        predicted = mlflow.pyfunc.load_model(str(path)).predict(candidates)
    tasks = [c.removeprefix("p_") for c in predicted.columns if c.startswith("p_")]
    probs = predicted[[f"p_{t}" for t in tasks]].to_numpy()
    labels = rows.select(f"label_{t}" for t in tasks).to_numpy()
    metrics = evaluate_predictions(tasks, list(range(len(tasks))), probs, labels, rows["user_id"].to_numpy())
    return {
        "rows": rows.height,
        "tasks": metrics,
        "mean_auc": float(np.nanmean([m["auc"] for m in metrics.values()])),
        "snapshot_cutoff": snapshot.cutoff,
    }


def served_tags(evaluation: dict[str, Any], served: dict[str, Any], split: str) -> dict[str, str]:
    """Version tags besides the gate's (:func:`pipeline.registry.eval_tags` of the served figures):
    what the AUC tags measure, the point-in-time AUCs of the trainer and the gap served - PIT."""
    from aptrank.pipeline.registry import TAG_EVAL_FEATURES

    tags = {TAG_EVAL_FEATURES: SERVED, TAG_SNAPSHOT_CUTOFF: str(served["snapshot_cutoff"])}
    pit = evaluation.get(split, {}).get("tasks", {})
    for task, m in served["tasks"].items():
        if task in pit:
            tags[f"{TAG_PIT_AUC}{task}"] = repr(float(pit[task]["auc"]))
            tags[f"{TAG_GAP}{task}"] = repr(float(m["auc"]) - float(pit[task]["auc"]))
    return tags


def gap_line(evaluation: dict[str, Any], served: dict[str, Any], split: str) -> str:
    """``click 0.7312 -> 0.7270 (-0.0042), ...``: point-in-time -> served AUC per task."""
    pit = evaluation.get(split, {}).get("tasks", {})
    parts = []
    for task, m in served["tasks"].items():
        if task in pit:
            a, b = float(pit[task]["auc"]), float(m["auc"])
            parts.append(f"{task} {a:.4f} -> {b:.4f} ({b - a:+.4f})")
    return ", ".join(parts)
