"""A trained run, loaded and rebuilt: the library behind ``aptrank export``, the job's export step
and :func:`aptrank.export`.

A run is a local run folder (``pipeline.trainer.Trainer``'s ``run_dir``: ``last.pt`` holds the config
and FeatureSpec hash, ``best_model.pt`` the weights) or an MLflow run id (artifacts ``config.yaml``,
``feature_spec.json``, ``checkpoint/best_model.pt`` as ``pipeline.tracking`` logs them; the ETL
output is the run's ``features/`` artifact or its config's ``data.features``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class RunError(ValueError):
    """A run cannot be exported: missing artifact, unknown run, FeatureSpec mismatch."""


@dataclass
class TrainedRun:
    config: dict[str, Any]
    state_dict: dict[str, Any]
    spec_hash: str | None
    features: Path | None
    source: str


def _local_run(run_dir: Path) -> TrainedRun:
    from aptrank.pipeline import checkpoint

    last, best = checkpoint.last_path(run_dir), checkpoint.best_path(run_dir)
    for f in (last, best):
        if not f.is_file():
            raise RunError(f"{f}: missing; a trained run folder holds {checkpoint.LAST} and {checkpoint.BEST}")
    state = checkpoint.load(last)
    weights = checkpoint.load(best)
    features = state["config"].get("data", {}).get("features")
    return TrainedRun(
        state["config"], weights, state.get("spec_hash"), Path(features) if features else None, str(run_dir)
    )


def _mlflow_run(run_id: str, tracking_uri: str | None, dest: Path) -> TrainedRun:
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline import checkpoint
    from aptrank.serving.model_source import FEATURES_ARTIFACT

    def fetch(path: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dest), tracking_uri=tracking_uri
            )
        )

    try:
        config = yaml.safe_load(fetch("config.yaml").read_text())
        weights = checkpoint.load(fetch("checkpoint/best_model.pt"))
        spec_hash = FeatureSpec.read(fetch("feature_spec.json")).hash
    except (MlflowException, OSError) as e:
        raise RunError(f"MLflow run {run_id} (tracking {tracking_uri or 'default'}): {e}") from e
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    features = fetch(FEATURES_ARTIFACT) if client.list_artifacts(run_id, FEATURES_ARTIFACT) else None
    if features is None and config.get("data", {}).get("features"):
        features = Path(config["data"]["features"])
    return TrainedRun(config, weights, spec_hash, features, f"runs:/{run_id}")


def load_run(run_id: str, tracking_uri: str | None, dest: Path) -> TrainedRun:
    """An MLflow run when ``run_id`` looks like one (32 hex digits) and is no folder, else a local run folder."""
    path = Path(run_id)
    if not path.is_dir() and MLFLOW_RUN_ID.match(run_id):
        return _mlflow_run(run_id, tracking_uri, dest)
    if not path.is_dir():
        raise RunError(f"run {run_id}: neither a run folder nor an MLflow run id (32 hex digits)")
    return _local_run(path)


def build_trained_model(run: TrainedRun, features: Path) -> tuple[Any, Any]:
    """(model in eval mode with the run's weights, FeatureSpec of ``features``)."""
    from aptrank.data.spec import FeatureSpec
    from aptrank.models.registry import build_model
    from aptrank.pipeline.config import build_config

    spec = FeatureSpec.read(features)
    if run.spec_hash and run.spec_hash != spec.hash:
        raise RunError(
            f"{features}: FeatureSpec {spec.hash[:12]} is not the one run {run.source} was trained on "
            f"({run.spec_hash[:12]}); pass the ETL output of that training (--features)"
        )
    cfg = build_config(run.config, run.source, shared_model_sizes=True)
    model = build_model(cfg.arch, spec, cfg.model_seeded, cfg.tasks)
    try:
        model.load_state_dict(run.state_dict)
    except RuntimeError as e:
        raise RunError(f"run {run.source}: weights do not fit a {cfg.arch} model built from its config ({e})") from e
    return model.eval(), spec
