"""Training the cells: in this process (``workers: 1``) or in a pool of spawned processes.

Workers only train (``pipeline.training.run_training``, or the LightGBM baseline) and evaluate,
and hand back the evaluation, the served evaluation, the epoch history and the ``apt`` diagnostics
they recorded. The served evaluation of a multi-task cell is the job's: the parity-gated ONNX export
scored through the scorer model with the dataset's test-split snapshot
(:func:`aptrank.pipeline.served_evaluation.evaluate_served`); a LightGBM cell scores the same raw rows
through the same feature lookup (:mod:`aptrank.pipeline.baselines.lightgbm_baseline`); single-task
baselines (only used for Δm%) have the point-in-time evaluation only; the parent process does all MLflow
logging (:mod:`aptrank.pipeline.experiment.mlflow_runs`), so the SQLite store has one writer. Each cell is
seeded by its config and trains with ``train.threads`` threads, so its numbers do not depend on
which worker ran it or in which order (tested).

A cell whose loss became NaN/inf comes back with ``error`` set (the grid goes on); any other
exception is a bug and stops the grid.
"""

from __future__ import annotations

import importlib
import multiprocessing
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aptrank.pipeline.baselines.lightgbm_baseline import LightGBMConfig
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.experiment.cells import Cell
from aptrank.pipeline.served_evaluation import ServedSnapshot

#: Imported once in each worker: its module code quiets library warnings as the CLI does.
WORKER_INIT_MODULE = "aptrank.pipeline.cli"
LIGHTGBM_DIR = "lightgbm"
"""A LightGBM cell's boosters (text models) under its run folder."""


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to train one cell (picklable)."""

    cell: Cell
    cfg: JobConfig
    features: Path
    run_dir: Path
    key: str  # pipeline.registry.version_key(cfg, data fingerprint): the cell's hash
    served: ServedSnapshot | None = None  # the test split's snapshot (None: no served evaluation)
    lightgbm: LightGBMConfig | None = None  # set for a LightGBM cell


@dataclass
class CellOutput:
    """What a worker hands back; ``error`` is set (and the rest empty) when the loss diverged."""

    evaluation: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    train_seconds: float = 0.0
    seconds: float = 0.0  # wall time in the worker: model build, training, evaluation
    diagnostics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    error: str | None = None
    served: dict[str, Any] = field(default_factory=dict)  # evaluate_served's result on the test split


def train_cell(job: CellJob) -> CellOutput:
    """Train ``job.cell`` from scratch in ``job.run_dir`` (an earlier partial attempt is removed)."""
    from aptrank.pipeline.trainer import NonFiniteLossError, TrainCallbacks
    from aptrank.pipeline.training import run_training

    t0 = time.perf_counter()
    if job.run_dir.exists():
        shutil.rmtree(job.run_dir)
    if job.lightgbm is not None:
        return train_lightgbm_cell(job, job.lightgbm, t0)
    recorded: list[tuple[int, dict[str, float]]] = []
    callbacks = TrainCallbacks(on_diagnostics=lambda step, stats: recorded.append((step, dict(stats))))
    try:
        result = run_training(
            job.cfg, job.features, job.run_dir, progress=False, trainer_kwargs={"callbacks": callbacks}
        )
    except NonFiniteLossError as e:
        return CellOutput(error=str(e), seconds=time.perf_counter() - t0)
    served = served_evaluation(job) if job.served is not None and not job.cell.is_baseline else {}
    return CellOutput(
        result.evaluation,
        result.history,
        result.best_epoch,
        result.train_seconds,
        time.perf_counter() - t0,
        recorded,
        served=served,
    )


def served_evaluation(job: CellJob) -> dict[str, Any]:
    """The job's served evaluation of the trained cell on the test split (module docstring)."""
    from aptrank.pipeline.run_export import export_run
    from aptrank.pipeline.scorer_model import model_fusion_weights
    from aptrank.pipeline.served_evaluation import evaluate_served

    assert job.served is not None
    onnx = job.run_dir / "model.onnx"
    export_run(job.run_dir, onnx, features=job.features, fold_rows=job.cfg.scoring.fold_rows)
    return evaluate_served(
        job.cfg, job.features, onnx, model_fusion_weights(job.cfg, onnx), "test", snapshot=job.served
    )


def train_lightgbm_cell(job: CellJob, params: LightGBMConfig, t0: float) -> CellOutput:
    """Train and evaluate (point-in-time and as served) the LightGBM baseline of ``job.cell``."""
    from aptrank.pipeline.baselines.lightgbm_baseline import evaluate_as_served, evaluate_point_in_time, train_lightgbm
    from aptrank.pipeline.scorer_model import raw_split_rows

    models = train_lightgbm(job.features, params, job.cell.seed)
    train_seconds = time.perf_counter() - t0
    models.save(job.run_dir / LIGHTGBM_DIR)
    evaluation = {"test": evaluate_point_in_time(models, job.features), "best_rounds": models.best_rounds}
    served: dict[str, Any] = {}
    if job.served is not None:
        rows = raw_split_rows(job.cfg.data.source, job.cfg.data.input, job.features, "test")
        served = {**evaluate_as_served(models, job.served.features, rows), "snapshot_cutoff": job.served.cutoff}
    return CellOutput(
        evaluation, [], max(models.best_rounds.values()), train_seconds, time.perf_counter() - t0, served=served
    )


def execute(jobs: Sequence[CellJob], workers: int) -> Iterator[tuple[CellJob, CellOutput]]:
    """Train ``jobs``; yield each with its output as it finishes (in order when ``workers`` is 1)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, train_cell(job)
        return
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=importlib.import_module,
        initargs=(WORKER_INIT_MODULE,),
    )
    try:
        futures: dict[Future[CellOutput], CellJob] = {pool.submit(train_cell, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # also on Ctrl-C or an error in the caller: queued cells are dropped, running ones end
        pool.shutdown(wait=True, cancel_futures=True)
