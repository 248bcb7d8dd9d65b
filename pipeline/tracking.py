"""Every training run is an MLflow run: params, per-epoch metrics, batched diagnostics, artifacts.

``TrackedRun`` wraps one run through ``MlflowClient`` (no process-wide active run)::

    with TrackedRun(cfg, workdir, features_dir=features, data_window="2022-04-08..2022-05-08") as tracked:
        result = Trainer(cfg, features, run_dir, callbacks=tracked.callbacks()).fit()
        tracked.log_result(result)

* params: the flattened job config (``JobConfig.flat``), the config hash, the FeatureSpec hash, the
  data window, the seed, the git commit and the versions of :data:`provenance.TRACKED_PACKAGES`;
* per-epoch metrics at ``step = epoch`` under ``Epoch/``: every number of the trainer's epoch record
  (``Epoch/train_loss/<task>``, ``Epoch/valid/<task>/auc|gauc|logloss|...``, ``Epoch/valid/mean_auc``,
  throughput such as ``Epoch/samples_per_s``); the MLflow UI orders chart sections by code point, so
  the capital ``E`` puts the learning curves first, before ``diag/``, ``final/`` and ``served/``;
* diagnostics of the ``apt`` optimizer at their step under ``diag/<key>``, buffered and sent with
  ``MlflowClient.log_batch``; ``apt`` computes them every ``mtl.diagnostics_every`` steps (0: never),
  ``TrackedRun(diagnostics_every=N)`` keeps those of steps divisible by N (default 1: all);
* after training: ``final/<split>/<task>/<metric>``, ``final/delta_m_auc`` when present, and the
  artifacts ``config.yaml``, ``feature_spec.json``, the JSON reports of the run folder (``evaluation.json``,
  ``baselines.json``), ``checkpoint/best_model.pt`` and ``plots/*.png`` (:mod:`pipeline.plots`).

MLflow conventions a user of the UI expects: the ETL's ``train``/``valid``/``test`` example sets are
the run's inputs (``log_inputs``, each with the digest of its files and the ``mlflow.data.context``
tag); the source tags (``mlflow.source.name`` = the command line, ``mlflow.source.type`` = JOB,
``mlflow.user``, ``mlflow.source.git.commit``); the experiment typed for model training
(``mlflow.experimentKind = custom_model_development``: the MLflow 3 UI opens on runs, not on the GenAI
overview); a run description (``mlflow.note.content``) with the headline metrics, point-in-time and
served (:meth:`TrackedRun.log_served`).

The run ends FINISHED, FAILED (an exception left the block) or KILLED (Ctrl-C). A run whose
process was killed, or whose server died before it could be closed, stays RUNNING on the server;
:func:`pipeline.stale_runs.fail_stale_runs` closes a scheduled job's such runs as FAILED when the job next starts.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from aptrank.data.spec import FeatureSpec
from aptrank.pipeline import plots
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.mlflow_conventions import EXPERIMENT_KIND, SPLITS, headline, source_tags, split_dataset
from aptrank.pipeline.mlflow_store import (
    artifact_location,
    connect,
    ensure_experiment,
    mlflow_errors,
    resolve_tracking_uri,
)
from aptrank.pipeline.provenance import config_hash, git_commit, package_versions

if TYPE_CHECKING:  # the trainer pulls in torch and apt; tracking and registry stay light without them
    from aptrank.pipeline.trainer import TrainCallbacks, TrainResult

FLUSH_AT = 1000  # metrics per log_batch call (MLflow's MAX_METRICS_PER_BATCH)
PLOT_POINTS = 2048  # diagnostics kept in memory per key for the plots (MLflow keeps every logged one)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value; the full config is in config.yaml
EPOCH_PREFIX = "Epoch/"
DIAGNOSTICS_PREFIX = "diag/"
FINAL_PREFIX = "final/"
EVALUATION_SKIP = frozenset({"history", "seed", "tasks", "arch", "spec_hash"})
SERVED_PREFIX = "served/"
GAP_PREFIX = "served_gap/"
TAG_TASK_DAG = "aptrank.task_dag"  # "click -> finish, click -> like" when the job has task dependencies

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /:]")


def metric_key(parts: tuple[str, ...]) -> str:
    """``("valid", "tasks", "click", "auc")`` -> ``"valid/click/auc"``: the ``tasks`` level is
    dropped, characters MLflow refuses become ``_``."""
    return _BAD_KEY_CHARS.sub("_", "/".join(p for p in parts if p != "tasks"))


def as_number(value: Any) -> float | None:
    """A finite float from a Python/NumPy/torch scalar; None for bools, non-scalars, NaN, inf."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, int | float):
        try:
            value = value.item()
        except (AttributeError, TypeError, ValueError, RuntimeError):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def numeric_items(
    d: Mapping[str, Any], prefix: tuple[str, ...] = (), skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, float]]:
    """(metric key, value) for every finite number in nested mapping ``d`` (lists are ignored)."""
    for k, v in d.items():
        if k in skip:
            continue
        if isinstance(v, Mapping):
            yield from numeric_items(v, (*prefix, str(k)))
        elif (number := as_number(v)) is not None:
            yield metric_key((*prefix, str(k))), number


def run_params(cfg: JobConfig, spec_hash: str | None, data_window: str | Mapping[str, str] | None) -> dict[str, str]:
    """Every param a run records (values cut to MLflow's limit)."""
    params = dict(cfg.flat())
    params.update({"seed": str(cfg.seed), "config.hash": config_hash(cfg), "git.commit": git_commit()})
    params.update({f"version.{k}": v for k, v in package_versions().items()})
    if spec_hash:
        params["feature_spec.hash"] = spec_hash
    if isinstance(data_window, Mapping):
        params.update({f"data_window.{k}": str(v) for k, v in data_window.items()})
    elif data_window is not None:
        params["data_window"] = str(data_window)
    return {k: v if len(v) <= MAX_PARAM_LENGTH else v[: MAX_PARAM_LENGTH - 3] + "..." for k, v in params.items()}


class TrackedRun:
    """One MLflow run of one training job (see the module docstring)."""

    def __init__(
        self,
        cfg: JobConfig,
        workdir: str | Path,
        *,
        features_dir: str | Path | None = None,
        data_window: str | Mapping[str, str] | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        diagnostics_every: int = 1,
        run_id: str | None = None,
    ) -> None:
        if diagnostics_every < 1:
            raise ValueError(f"TrackedRun: diagnostics_every must be >= 1, got {diagnostics_every}")
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.features_dir = Path(features_dir) if features_dir is not None else None
        self.data_window = data_window
        self.run_name = run_name or cfg.name
        self.extra_tags = dict(tags or {})
        self.diagnostics_every = diagnostics_every
        self.run_id = run_id or ""
        self.uri = resolve_tracking_uri(cfg.tracking.uri, self.workdir)
        self.client = connect(self.uri, cfg.tracking.timeout_s)
        self._series: dict[str, Thinned] = {}
        self._buffer: list[Metric] = []
        self._notes: list[str] = []

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.end(RunStatus.to_string(RunStatus.FINISHED))
            return
        status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
        try:  # the training error is what matters; a tracking error now must not hide it
            self.end(RunStatus.to_string(status))
        except Exception as e:
            exc.add_note(f"(also: closing MLflow run {self.run_id} failed: {e})")

    def start(self) -> str:
        """Create (or, with ``run_id``, reopen) the run and log its params; return the run id."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_hash = FeatureSpec.read(self.features_dir).hash if self.features_dir is not None else None
        params = run_params(self.cfg, spec_hash, self.data_window)
        tags = {
            "mlflow.source.git.commit": params["git.commit"],
            **source_tags(),
            "aptrank.job": self.cfg.name,
            **self.extra_tags,
        }
        if self.cfg.tasks:  # the task structure (ESMM); params hold it too, as tasks.<task>.given
            tags[TAG_TASK_DAG] = ", ".join(f"{d.parent} -> {t}" for t, d in sorted(self.cfg.tasks.items()))
        exp_name = self.cfg.tracking.experiment
        with mlflow_errors(self.uri, f"start a run in experiment '{exp_name}'"):
            if self.run_id:
                self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            else:
                exp_id = ensure_experiment(self.client, exp_name, artifact_location(self.uri, self.workdir))
                self.client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
                self.run_id = self.client.create_run(exp_id, run_name=self.run_name).info.run_id
            self.client.log_batch(
                self.run_id,
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, str(v)) for k, v in tags.items()],
            )
            if self.features_dir is not None:
                inputs = [split_dataset(self.features_dir, s, self.cfg.name) for s in SPLITS]
                self.client.log_inputs(self.run_id, datasets=inputs)
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """Send what is buffered and close the run with ``status``."""
        self.flush()
        with mlflow_errors(self.uri, f"end run {self.run_id}"):
            self.client.set_terminated(self.run_id, status=status)

    # ---- metrics ---------------------------------------------------------------------------
    @property
    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Logged diagnostics kept for the plots: key -> [(step, value)] (thinned, see :class:`Thinned`)."""
        return {k: t.points for k, t in self._series.items()}

    def callbacks(self) -> TrainCallbacks:
        """Hooks for ``pipeline.trainer.Trainer``."""
        from aptrank.pipeline.trainer import TrainCallbacks

        return TrainCallbacks(on_epoch_end=self.log_epoch, on_diagnostics=self.log_diagnostics)

    def log_epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """Every number of an epoch record at ``step = epoch``; then flush (diagnostics included)."""
        now = _now_ms()
        items = numeric_items(record, skip=frozenset({"epoch"}))
        self._buffer.extend(Metric(EPOCH_PREFIX + k, v, now, epoch) for k, v in items)
        self.flush()

    def log_diagnostics(self, step: int, stats: Mapping[str, Any]) -> None:
        """Optimizer diagnostics of ``step`` (when divisible by ``diagnostics_every``), buffered."""
        if step % self.diagnostics_every:
            return
        now = _now_ms()
        for key, value in numeric_items(stats):
            self._series.setdefault(key, Thinned()).add(step, value)
            self._buffer.append(Metric(DIAGNOSTICS_PREFIX + key, value, now, step))
        if len(self._buffer) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        with mlflow_errors(self.uri, f"log {len(batch)} metrics to run {self.run_id}"):
            self.client.log_batch(self.run_id, metrics=batch)

    # ---- artifacts -------------------------------------------------------------------------
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> str:
        """Upload a file or a folder; return its artifact path in the run."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: artifact to log does not exist")
        with mlflow_errors(self.uri, f"log artifact {p} to run {self.run_id}"):
            if p.is_dir():
                self.client.log_artifacts(self.run_id, str(p), artifact_path)
                return artifact_path or "."
            self.client.log_artifact(self.run_id, str(p), artifact_path)
        return f"{artifact_path}/{p.name}" if artifact_path else p.name

    def log_result(
        self,
        result: TrainResult,
        *,
        checkpoint: str | Path | None = None,
        extra_artifacts: Mapping[str, str | Path] | None = None,
    ) -> list[str]:
        """Final metrics and every artifact of a finished training; returns the artifact paths.

        ``checkpoint`` defaults to ``<run_dir>/best_model.pt``; ``extra_artifacts`` maps an
        artifact folder to a local file or folder."""
        from aptrank.pipeline.checkpoint import best_path

        evaluation = result.evaluation
        now, step = _now_ms(), max(result.best_epoch, 0)
        final = [Metric(FINAL_PREFIX + k, v, now, step) for k, v in numeric_items(evaluation, skip=EVALUATION_SKIP)]
        final.append(Metric(FINAL_PREFIX + "train_seconds", float(result.train_seconds), now, step))
        self._buffer.extend(final)
        self.flush()
        logged: list[str] = []
        with mlflow_errors(self.uri, f"log config to run {self.run_id}"):
            self.client.log_dict(self.run_id, self.cfg.to_dict(), "config.yaml")
        logged.append("config.yaml")
        if self.features_dir is not None:
            logged.append(self.log_artifact(self.features_dir / "feature_spec.json"))
        elif evaluation.get("spec_hash"):
            with mlflow_errors(self.uri, f"log params to run {self.run_id}"):
                self.client.log_param(self.run_id, "feature_spec.hash", str(evaluation["spec_hash"]))
        logged += [self.log_artifact(f) for f in sorted(result.run_dir.glob("*.json"))]  # evaluation, baselines
        logged.append(self.log_artifact(checkpoint or best_path(result.run_dir), "checkpoint"))
        with tempfile.TemporaryDirectory(prefix="aptrank-plots-") as tmp:
            for png in plots.write_plots(tmp, result.history, self.series, evaluation.get("tasks") or ()):
                logged.append(self.log_artifact(png, "plots"))
        for folder, path in (extra_artifacts or {}).items():
            logged.append(self.log_artifact(path, folder))
        self.describe(headline(f"{self.cfg.name}: {self.cfg.arch}, best epoch {result.best_epoch}", evaluation))
        return logged

    def log_served(self, served: Mapping[str, Any], split: str, evaluation: Mapping[str, Any]) -> None:
        """The evaluation as served (:mod:`pipeline.served_evaluation`) as ``served/<split>/...``
        metrics, the gap to the point-in-time figures as ``served_gap/<split>/<task>/auc``, and a
        line of the run description."""
        now = _now_ms()
        body = {k: v for k, v in served.items() if k != "snapshot_cutoff"}
        self._buffer.extend(Metric(SERVED_PREFIX + k, v, now, 0) for k, v in numeric_items(body, (split,)))
        pit = evaluation.get(split, {}).get("tasks", {})
        for task, m in served["tasks"].items():
            if task in pit and (gap := as_number(m["auc"] - pit[task]["auc"])) is not None:
                self._buffer.append(Metric(f"{GAP_PREFIX}{split}/{task}/auc", gap, now, 0))
        self.flush()
        cutoff = served.get("snapshot_cutoff")
        self.describe(headline(f"served ({split}, snapshot as of {cutoff})", {split: served}))

    def describe(self, line: str) -> None:
        """Add ``line`` to the run description (``mlflow.note.content``, shown on the run page)."""
        self._notes.append(line)
        with mlflow_errors(self.uri, f"set the description of run {self.run_id}"):
            self.client.set_tag(self.run_id, MLFLOW_RUN_NOTE, "\n\n".join(self._notes))


@dataclass
class Thinned:
    """Every ``stride``-th point of a series, at most ``capacity`` of them: when full, every other
    point is dropped and the stride doubles, so the kept points stay evenly spread over the whole
    run and memory stays bounded however long it trains."""

    capacity: int = PLOT_POINTS
    points: list[tuple[int, float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, step: int, value: float) -> None:
        if self.seen % self.stride == 0:
            self.points.append((step, value))
            if len(self.points) >= self.capacity:
                del self.points[1::2]
                self.stride *= 2
        self.seen += 1


def _now_ms() -> int:
    return int(time.time() * 1000)
