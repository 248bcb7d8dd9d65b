"""``aptrank export``: a trained run -> ONNX, behind the PyTorch-vs-ONNX parity gate.

``--run-id`` is a local run folder (``pipeline.trainer.Trainer``'s ``run_dir``: ``last.pt`` holds the
config and FeatureSpec hash, ``best_model.pt`` the weights) or an MLflow run id (artifacts
``config.yaml``, ``feature_spec.json``, ``checkpoint/best_model.pt`` as ``pipeline.tracking`` logs
them). The parity rows are the first ``--parity-rows`` rows of the ETL output's ``test`` split:
``--features`` or, failing that, the run's ``features/`` artifact or its config's ``data.features``.

Exit codes: 0 exported; 1 the parity gate failed (nothing written at ``--out``); 2 bad input (run,
features or FeatureSpec mismatch; the message names the file and the rule).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
PARITY_EXIT_CODE = 1
INPUT_EXIT_CODE = 2


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
    import torch

    from aptrank.pipeline import checkpoint

    last, best = checkpoint.last_path(run_dir), checkpoint.best_path(run_dir)
    for f in (last, best):
        if not f.is_file():
            raise RunError(f"{f}: missing; a trained run folder holds {checkpoint.LAST} and {checkpoint.BEST}")
    state = checkpoint.load(last)
    weights = torch.load(best, map_location="cpu", weights_only=True)
    features = state["config"].get("data", {}).get("features")
    return TrainedRun(
        state["config"], weights, state.get("spec_hash"), Path(features) if features else None, str(run_dir)
    )


def _mlflow_run(run_id: str, tracking_uri: str | None, dest: Path) -> TrainedRun:
    import mlflow
    import torch
    import yaml
    from mlflow.exceptions import MlflowException

    from aptrank.data.spec import FeatureSpec
    from aptrank.serving.model_source import FEATURES_ARTIFACT

    def fetch(path: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dest), tracking_uri=tracking_uri
            )
        )

    try:
        config = yaml.safe_load(fetch("config.yaml").read_text())
        weights = torch.load(fetch("checkpoint/best_model.pt"), map_location="cpu", weights_only=True)
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
        raise RunError(f"--run-id {run_id}: neither a run folder nor an MLflow run id (32 hex digits)")
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
            f"({run.spec_hash[:12]}); pass the ETL output of that training with --features"
        )
    cfg = build_config(run.config, run.source, shared_model_sizes=True)
    model = build_model(cfg.arch, spec, cfg.model_seeded)
    try:
        model.load_state_dict(run.state_dict)
    except RuntimeError as e:
        raise RunError(f"run {run.source}: weights do not fit a {cfg.arch} model built from its config ({e})") from e
    return model.eval(), spec


def parity_rows(features: Path, spec: Any, rows: int) -> dict[str, Any]:
    """Model input arrays of the first ``rows`` rows of the ``test`` split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aptrank.data.tensors import model_inputs

    files = sorted((features / "test").rglob("*.parquet"))
    if not files:
        raise RunError(f"{features / 'test'}: no Parquet files; the parity check needs the ETL's test split")
    batches, held = [], 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=min(rows, 65_536)):
            batches.append(batch.slice(0, rows - held))
            held += batches[-1].num_rows
            if held >= rows:
                return model_inputs(pa.Table.from_batches(batches), spec)
    return model_inputs(pa.Table.from_batches(batches), spec)


def export_command(
    run_id: Annotated[str, typer.Option("--run-id", help="local run folder (trainer run_dir) or MLflow run id")],
    out: Annotated[Path, typer.Option(help="ONNX file to write (only when the parity gate passes)")],
    features: Annotated[Path | None, typer.Option(help="ETL output the run was trained on (parity rows)")] = None,
    parity_rows_: Annotated[int, typer.Option("--parity-rows", help="test-split rows compared")] = 10_000,
    tolerance: Annotated[float, typer.Option(help="max |p_onnx - p_torch| allowed")] = 1e-5,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")] = None,
    fold_rows: Annotated[
        int | None,
        typer.Option(
            help="fold categorical features with small tables into the first dense layer, up to this many "
            "rows per folded table; 0 = off [default: models.export_fold.FOLD_MAX_ROWS, 4096]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a trained model to ONNX; refuse it when any probability differs from PyTorch."""
    from aptrank.data.spec import SpecError
    from aptrank.serving.errors import ParityError
    from aptrank.serving.export import export_checked

    if parity_rows_ < 1 or not tolerance >= 0 or (fold_rows is not None and fold_rows < 0):
        raise typer.BadParameter("--parity-rows must be >= 1, --tolerance >= 0 and --fold-rows >= 0")
    with tempfile.TemporaryDirectory(prefix="aptrank-export-") as tmp:
        try:
            run = load_run(run_id, tracking_uri, Path(tmp))
            feats = features or run.features
            if feats is None:
                raise RunError(f"run {run.source}: no ETL output known; pass --features DIR")
            model, spec = build_trained_model(run, feats)
            rows = parity_rows(feats, spec, parity_rows_)
            result = export_checked(model, spec, out, rows, tolerance, fold_rows=fold_rows)
        except ParityError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(PARITY_EXIT_CODE) from None
        except (RunError, SpecError, FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(INPUT_EXIT_CODE) from None
    typer.echo(
        json.dumps(
            {
                "out": str(result.path),
                "run": run.source,
                "spec_hash": result.spec_hash,
                "tasks": list(result.task_names),
                "parity": result.parity.to_dict(),
            }
        )
    )


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the ``aptrank`` app."""
    app.command("export")(export_command)
