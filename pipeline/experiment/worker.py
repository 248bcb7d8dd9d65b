"""Training the cells: in this process (``workers: 1``) or in a pool of spawned processes.

Workers only train (``pipeline.training.run_training``) and hand back the evaluation, the
epoch history and the ``apt`` diagnostics they recorded; the parent process does all MLflow
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

from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.experiment.cells import Cell

#: Imported once in each worker: its module code quiets library warnings as the CLI does.
WORKER_INIT_MODULE = "aptrank.pipeline.cli"


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to train one cell (picklable)."""

    cell: Cell
    cfg: JobConfig
    features: Path
    run_dir: Path
    key: str  # pipeline.registry.version_key(cfg, data fingerprint): the cell's hash


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


def train_cell(job: CellJob) -> CellOutput:
    """Train ``job.cell`` from scratch in ``job.run_dir`` (an earlier partial attempt is removed)."""
    from aptrank.pipeline.trainer import NonFiniteLossError, TrainCallbacks
    from aptrank.pipeline.training import run_training

    t0 = time.perf_counter()
    if job.run_dir.exists():
        shutil.rmtree(job.run_dir)
    recorded: list[tuple[int, dict[str, float]]] = []
    callbacks = TrainCallbacks(on_diagnostics=lambda step, stats: recorded.append((step, dict(stats))))
    try:
        result = run_training(
            job.cfg, job.features, job.run_dir, progress=False, trainer_kwargs={"callbacks": callbacks}
        )
    except NonFiniteLossError as e:
        return CellOutput(error=str(e), seconds=time.perf_counter() - t0)
    return CellOutput(
        result.evaluation, result.history, result.best_epoch, result.train_seconds, time.perf_counter() - t0, recorded
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
