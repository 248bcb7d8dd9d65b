"""``aptrank train``: train one multi-task ranker on an ETL output, with optional single-task baselines
(the library: :mod:`aptrank.pipeline.training`; this module parses options and maps errors to exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from aptrank.pipeline.config import ConfigError, load_config


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
        from aptrank.data.etl.staged import GateFailedOutputError, require_passed
        from aptrank.data.spec import SpecError
        from aptrank.pipeline.checkpoint import CheckpointError
        from aptrank.pipeline.trainer import NonFiniteLossError
        from aptrank.pipeline.training import tracked_training

        out = run_dir or Path("work") / "train" / cfg.name
        try:
            require_passed(features)
            result, mlflow_run = tracked_training(
                cfg, features, out, workdir if track else None, resume=resume, baselines=baselines, progress=progress
            )
        except NonFiniteLossError as e:
            _fail(1, f"training diverged: {e}", out)
        except ConfigError as e:  # a rule that needs the FeatureSpec (tasks naming an unknown task)
            _fail(2, f"{cfg.source_file}: {e}", out)
        except (FileNotFoundError, CheckpointError, GateFailedOutputError, SpecError) as e:  # SpecError: no ETL output
            _fail(2, str(e), out)
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


def _fail(code: int, message: str, run_dir: Path) -> NoReturn:
    """One ``error:`` line on stderr, the JSON summary line on stdout (``exit_code``, ``error``), exit."""
    typer.echo(f"error: {message}", err=True)
    sys.stdout.write(json.dumps({"exit_code": code, "error": message, "run_dir": str(run_dir)}) + "\n")
    sys.stdout.flush()
    raise typer.Exit(code)
