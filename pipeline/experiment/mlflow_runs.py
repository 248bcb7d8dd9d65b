"""MLflow for a grid: one parent run per grid and work dir, one child run per cell.

Children are ordinary :class:`aptrank.pipeline.tracking.TrackedRun` runs (params, per-epoch metrics,
``diag/*`` diagnostics, final metrics, artifacts, plots) tagged ``mlflow.parentRunId`` (MLflow's
nesting tag, what ``mlflow.start_run(nested=True)`` sets) and ``aptrank.cell``. A worker's recorded
history and diagnostics are replayed into the child in the parent process, so metric timestamps are
the logging time, not the training time (steps and values are the trained ones).

The parent run's id is kept in ``<workdir>/parent_run.json``: a resumed grid reopens it, so the
children of every invocation sit under one parent. The parent gets the grid's tags and, at the end,
``results.md``, ``results.json`` and the plots as artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.experiment.worker import LIGHTGBM_DIR, CellJob, CellOutput
from aptrank.pipeline.mlflow_store import (
    artifact_location,
    connect,
    ensure_experiment,
    mlflow_errors,
    resolve_tracking_uri,
)
from aptrank.pipeline.tracking import TrackedRun

PARENT_FILE = "parent_run.json"
PARENT_TAG = "mlflow.parentRunId"
ERROR_TAG = "aptrank.error"


class ParentRun:
    """``with ParentRun(cfg, workdir, name, tags) as parent:`` — the grid's parent run; ends
    FINISHED, FAILED (an exception left the block) or KILLED (Ctrl-C)."""

    def __init__(self, cfg: JobConfig, workdir: Path, name: str, tags: dict[str, str]) -> None:
        self.cfg, self.workdir, self.name, self.tags = cfg, workdir, name, tags
        self.uri = resolve_tracking_uri(cfg.tracking.uri, workdir)
        self.client = connect(self.uri)
        self.run_id = ""
        self.resumed = False

    def __enter__(self) -> ParentRun:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            status = RunStatus.FINISHED
        else:
            status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
        with mlflow_errors(self.uri, f"end parent run {self.run_id}"):
            self.client.set_terminated(self.run_id, status=RunStatus.to_string(status))

    def start(self) -> str:
        saved = self._saved_run()
        with mlflow_errors(self.uri, f"start the parent run of grid '{self.name}'"):
            if saved:
                self.client.update_run(saved, status=RunStatus.to_string(RunStatus.RUNNING))
                self.run_id, self.resumed = saved, True
            else:
                exp = ensure_experiment(
                    self.client, self.cfg.tracking.experiment, artifact_location(self.uri, self.workdir)
                )
                self.run_id = self.client.create_run(exp, run_name=self.name).info.run_id
            for key, value in self.tags.items():
                self.client.set_tag(self.run_id, key, value)
        (self.workdir / PARENT_FILE).write_text(json.dumps({"run_id": self.run_id, "tracking_uri": self.uri}))
        return self.run_id

    def _saved_run(self) -> str | None:
        """The parent run of an earlier invocation in this work dir, if its store still has it."""
        path = self.workdir / PARENT_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        if saved.get("tracking_uri") != self.uri:
            return None
        try:
            run = self.client.get_run(saved["run_id"])
        except MlflowException:
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def log_grid(self, grid: dict) -> None:
        """The grid as run (``grid.json``; overwritten by each invocation)."""
        with mlflow_errors(self.uri, f"log the grid to run {self.run_id}"):
            self.client.log_dict(self.run_id, grid, "grid.json")

    def log_outputs(self, files: list[Path], folder: str | None = None) -> None:
        with mlflow_errors(self.uri, f"log grid outputs to run {self.run_id}"):
            for f in files:
                self.client.log_artifact(self.run_id, str(f), folder)


def log_child(job: CellJob, output: CellOutput, workdir: Path, parent_id: str, tags: dict[str, str]) -> str:
    """The cell's MLflow child run under ``parent_id`` (FAILED with ``aptrank.error`` when the cell
    diverged); returns its run id."""
    from aptrank.pipeline.trainer import TrainResult

    all_tags = {PARENT_TAG: parent_id, "aptrank.cell": job.cell.id, "aptrank.cell.key": job.key, **tags}
    tracked = TrackedRun(job.cfg, workdir, features_dir=job.features, run_name=job.cell.id, tags=all_tags)
    if output.error is not None:
        tracked.start()
        with mlflow_errors(tracked.uri, f"tag run {tracked.run_id}"):
            tracked.client.set_tag(tracked.run_id, ERROR_TAG, output.error[:5000])
        tracked.end(RunStatus.to_string(RunStatus.FAILED))
        return tracked.run_id
    with tracked:
        for step, stats in output.diagnostics:
            tracked.log_diagnostics(step, stats)
        for record in output.history:
            tracked.log_epoch(int(record["epoch"]), record)
        boosters = job.run_dir / LIGHTGBM_DIR
        tracked.log_result(
            TrainResult(job.run_dir, output.best_epoch, output.history, output.evaluation, output.train_seconds),
            checkpoint=boosters if job.cell.is_lightgbm else None,
        )
        if output.served:
            tracked.log_served(output.served, "test", output.evaluation)
    return tracked.run_id
