"""``aptrank train``: train one multi-task ranker on an ETL output, with optional single-task baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aptrank.pipeline.config import ConfigError, JobConfig, load_config

if TYPE_CHECKING:
    from aptrank.pipeline.trainer import TrainResult

BASELINES_FILE = "baselines.json"
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


def train_baselines(cfg: JobConfig, features: Path, run_dir: Path, progress: bool) -> dict[str, dict[str, float]]:
    """Train one ``single_task`` model per task with the same trainer; return test metrics per task."""
    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.trainer import Trainer

    out: dict[str, dict[str, float]] = {}
    for task in FeatureSpec.read(features).task_names:
        single = cfg.with_model("single_task", task=task)
        result = Trainer(single, features, run_dir / "baselines" / task, progress=progress).fit()
        out[task] = result.evaluation["test"]["tasks"][task]
    (run_dir / BASELINES_FILE).write_text(json.dumps(out, indent=2, sort_keys=True))
    return out


def run_training(
    cfg: JobConfig,
    features: Path,
    run_dir: Path,
    *,
    resume: bool = False,
    baselines: bool = False,
    progress: bool = True,
    trainer_kwargs: dict | None = None,
) -> TrainResult:
    """Train (or resume), then add Δm% against single-task baselines when they exist."""
    from aptrank.pipeline.metrics import delta_m
    from aptrank.pipeline.trainer import Trainer

    trainer = Trainer(cfg, features, run_dir, progress=progress, **(trainer_kwargs or {}))
    if resume:
        trainer.resume()
    try:
        result = trainer.fit()
    finally:
        trainer.parallel.close()
    base_file = run_dir / BASELINES_FILE
    base = (
        train_baselines(cfg, features, run_dir, progress)
        if baselines
        else (json.loads(base_file.read_text()) if base_file.is_file() else None)
    )
    if base:
        result.evaluation["delta_m_auc"] = delta_m(result.evaluation["test"]["tasks"], base, ("auc",))
        result.evaluation["baselines"] = base
        (run_dir / "evaluation.json").write_text(json.dumps(result.evaluation, indent=2, sort_keys=True, default=str))
    return result


def tracked_training(
    cfg: JobConfig,
    features: Path,
    run_dir: Path,
    workdir: Path | None,
    *,
    resume: bool,
    baselines: bool,
    progress: bool,
) -> tuple[TrainResult, str | None]:
    """``run_training`` as an MLflow run (rank 0 only; ``workdir`` None: untracked). A resumed run
    reattaches to its MLflow run, whose id is kept in the run folder."""
    if workdir is None or int(os.environ.get("RANK", "0")) != 0:
        return run_training(cfg, features, run_dir, resume=resume, baselines=baselines, progress=progress), None
    from aptrank.pipeline.tracking import TrackedRun

    id_file = run_dir / MLFLOW_RUN_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
    with TrackedRun(cfg, workdir, features_dir=features, run_id=run_id) as tracked:
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(tracked.run_id + "\n")
        result = run_training(
            cfg,
            features,
            run_dir,
            resume=resume,
            baselines=baselines,
            progress=progress,
            trainer_kwargs={"callbacks": tracked.callbacks()},
        )
        tracked.log_result(result)
    return result, tracked.run_id


def launch_distributed(
    nproc: int,
    features: Path,
    config: Path | None,
    overrides: list[str],
    run_dir: Path,
    progress: bool,
    workdir: Path | None,
) -> int:
    """Re-run this command under ``torchrun --standalone --nproc_per_node=N``; returns its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "aptrank.pipeline.cli",
        "train",
        "--features",
        str(features),
        "--run-dir",
        str(run_dir),
    ]
    cmd += ["--workdir", str(workdir)] if workdir is not None else ["--no-track"]
    if config is not None:
        cmd += ["--config", str(config)]
    for item in overrides:
        cmd += ["--set", item]
    if not progress:
        cmd.append("--no-progress")
    return subprocess.call(cmd)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        features: Annotated[Path, typer.Option(help="ETL output dir (feature_spec.json, train/valid/test).")],
        config: Annotated[Path | None, typer.Option(help="Job config YAML (configs/*.yaml).")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: key=value.")] = None,
        run_dir: Annotated[Path | None, typer.Option(help="Where checkpoints and evaluation.json go.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir from its last checkpoint.")] = False,
        baselines: Annotated[bool, typer.Option(help="Also train single-task baselines and report Δm%.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
        workdir: Annotated[
            Path,
            typer.Option(
                help="Where the default MLflow store lives (SQLite + artifacts; "
                "MLFLOW_TRACKING_URI or tracking.uri point elsewhere)."
            ),
        ] = Path("work"),
        track: Annotated[
            bool, typer.Option(help="Record the run in MLflow (params, metrics, plots, checkpoint).")
        ] = True,
        nproc: Annotated[
            int,
            typer.Option(
                help="Processes: >1 runs under torchrun with TorchRec "
                "DistributedModelParallel (tables sharded table-wise, dense "
                "part data parallel; gloo on CPU, NCCL on GPU)."
            ),
        ] = 1,
    ) -> None:
        """Train a multi-task ranker; early-stops on validation mean AUC; checkpoints every epoch."""
        try:
            cfg = load_config(config, set_ or [])
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        if nproc > 1:
            if resume or baselines:
                typer.echo("error: --nproc > 1 does not combine with --resume or --baselines", err=True)
                raise typer.Exit(2)
            raise typer.Exit(
                launch_distributed(
                    nproc,
                    features,
                    config,
                    set_ or [],
                    run_dir or Path("work") / "train" / cfg.name,
                    progress,
                    workdir if track else None,
                )
            )
        from aptrank.pipeline.trainer import NonFiniteLossError

        out = run_dir or Path("work") / "train" / cfg.name
        try:
            result, mlflow_run = tracked_training(
                cfg, features, out, workdir if track else None, resume=resume, baselines=baselines, progress=progress
            )
        except NonFiniteLossError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        except FileNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        if int(os.environ.get("RANK", "0")) != 0:
            return
        summary = {
            "run_dir": str(out),
            "best_epoch": result.best_epoch,
            "test_auc": {t: m["auc"] for t, m in result.evaluation["test"]["tasks"].items()},
            "delta_m_auc": result.evaluation.get("delta_m_auc"),
            "mlflow_run_id": mlflow_run,
        }
        sys.stdout.write(json.dumps(summary) + "\n")
