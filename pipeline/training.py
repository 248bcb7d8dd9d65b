"""Training as a library: one multi-task ranker on an ETL output, with optional single-task
baselines (Δm%, Maninis et al., CVPR 2019) and MLflow tracking. ``aptrank train``, the job, the
experiment workers and :func:`aptrank.train` call these."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from aptrank.pipeline.config import JobConfig

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
    from aptrank.pipeline.ranking_metrics import delta_m
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
