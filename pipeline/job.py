"""The scheduled job: ETL -> train -> evaluate -> export -> register -> gate, one config, one lock.

Idempotent per data window: the registry version key is the hash of (config, ETL output
fingerprint), and the ETL output is byte-identical for the same input and config, so a rerun on the
same inputs finds the existing version, makes no new one and finishes the promotion steps a crash
left undone (:mod:`aptrank.pipeline.promotion`). Exit codes (:class:`JobExit`): 0 ok, 1 failure
(a diverging training included), 2 bad config or data, 3 the gate refused the challenger (a floor
or the champion); a rerun of a refused version exits 3 again.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from aptrank.pipeline.config import ConfigError, JobConfig


class JobExit(IntEnum):
    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    GATE_REFUSED = 3


class JobError(RuntimeError):
    def __init__(self, message: str, code: JobExit) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class JobOutcome:
    code: JobExit
    summary: dict[str, Any] = field(default_factory=dict)


def run_etl_step(cfg: JobConfig, workdir: Path, log: Any, date: dt.date | None = None) -> Path:
    """The ETL into ``workdir/features`` (or the configured ``data.features``); exit 2 on bad data.
    With ``date`` (the logical date): the incremental daily ETL of that day into ``workdir/daily``
    (the first run bootstraps; a gap or another config is refused, exit 2)."""
    if cfg.data.features:
        return Path(cfg.data.features)
    from aptrank.data.adapters import SourceError
    from aptrank.data.etl.config import EtlConfig, EtlConfigError, load_config
    from aptrank.data.etl.daily import StateError, run_scheduled
    from aptrank.data.etl.run import run_etl
    from aptrank.data.etl.staged import run_staged
    from aptrank.data.schema import SchemaError

    out = workdir / ("features" if date is None else "daily")
    try:
        etl_cfg = load_config(cfg.data.etl_config) if cfg.data.etl_config else EtlConfig()
        if date is None:
            result = run_staged(
                lambda stage: run_etl(cfg.data.source, cfg.data.input, stage, etl_cfg, progress=log), out
            )
        else:
            result = run_scheduled(cfg.data.source, cfg.data.input, out, etl_cfg, date, log)
    except (EtlConfigError, StateError, SourceError, SchemaError, FileNotFoundError) as e:
        raise JobError(f"ETL: {e}", JobExit.BAD_INPUT) from e
    if not result.passed:
        failures = "; ".join(result.summary["gates"]["failures"])
        raise JobError(f"ETL data-quality gate failed ({failures}); see {out / 'rejects.parquet'}", JobExit.BAD_INPUT)
    return out


def export_step(run_dir: Path, features: Path, fold_rows: int | None = None) -> Path:
    """Parity-gated ONNX export of the trained run (exit 1 when the gate fails); ``fold_rows``: the
    config's ``scoring.fold_rows`` (None: the exporter's default)."""
    from aptrank.models.export import ParityError
    from aptrank.pipeline.run_export import export_run

    try:
        return export_run(run_dir, run_dir / "model.onnx", features=features, fold_rows=fold_rows).result.path
    except ParityError as e:
        raise JobError(f"export: {e}", JobExit.FAILURE) from e


def run_job(cfg: JobConfig, workdir: Path, log: Any = print, date: dt.date | None = None) -> JobOutcome:
    """Run the whole job under the config's lock; returns the exit code and the final summary.
    ``date``: the logical date of a scheduled run (incremental daily ETL, :func:`run_etl_step`)."""
    from aptrank.pipeline.lock import JobLock

    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    with JobLock(workdir, cfg.name):
        log(f"[run] ETL ({cfg.data.source}: {cfg.data.input})")
        features = run_etl_step(cfg, workdir, log, date)
        outcome = train_and_register(cfg, features, workdir, log)
    if "seconds" in outcome.summary:  # the whole job, ETL included
        outcome.summary["seconds"] = round(time.perf_counter() - t0, 1)
    return outcome


def gate_summary(decision: Any) -> dict[str, Any]:
    """The ``gate`` block of the job's JSON summary."""
    return {
        "decision": "promoted" if decision.promoted else "refused",
        "reason": decision.reason,
        "champion_version": decision.champion_version,
        "tolerance": decision.tolerance,
        "floors": decision.floors,
        "champion_rescored": decision.rescored,
    }


def train_and_register(cfg: JobConfig, features: Path, workdir: Path, log: Any = print) -> JobOutcome:
    """The job after its ETL: train on ``features`` as an MLflow run, export, build the scorer model
    and evaluate it as served, register the version and gate it (:mod:`aptrank.pipeline.promotion`);
    when this config and data already have a version, finish the promotion steps a crash left undone
    instead of training again. The caller holds the config's lock (:class:`~aptrank.pipeline.lock.JobLock`)."""
    from aptrank.data.etl.staged import GateFailedOutputError, require_passed
    from aptrank.pipeline.champion_rescore import champion_rescorer
    from aptrank.pipeline.mlflow_store import connect, resolve_tracking_uri
    from aptrank.pipeline.promotion import GateSettings, abandon_orphans, finish, register_and_gate
    from aptrank.pipeline.provenance import fingerprint
    from aptrank.pipeline.registry import find_version, read_aucs, registered_model_name, version_key
    from aptrank.pipeline.scorer_model import build_scorer_model, follow_up_commands
    from aptrank.pipeline.served_evaluation import gap_line, served_tags
    from aptrank.pipeline.stale_runs import TAG_SCHEDULED, fail_stale_runs
    from aptrank.pipeline.tracking import TrackedRun
    from aptrank.pipeline.trainer import NonFiniteLossError
    from aptrank.pipeline.training import run_training

    t0 = time.perf_counter()
    try:
        require_passed(features)
    except GateFailedOutputError as e:
        raise JobError(str(e), JobExit.BAD_INPUT) from e
    name = registered_model_name(cfg)
    key = version_key(cfg, fingerprint(features))
    uri = resolve_tracking_uri(cfg.tracking.uri, workdir)
    client = connect(uri, cfg.tracking.timeout_s)
    gate = GateSettings.of(cfg.gate)
    split = cfg.gate.split
    summary: dict[str, Any] = {
        "registered_model": name,
        "tracking_uri": uri,
        "champion_uri": f"models:/{name}@champion",
        "follow_up": follow_up_commands(uri, name, cfg.data.source, cfg.data.input, workdir),
    }
    lock_dir = str(workdir.resolve())
    stale = fail_stale_runs(client, cfg.tracking.experiment, cfg.name, lock_dir)
    if stale:
        log(f"[run] closed {len(stale)} run(s) a killed job left RUNNING as FAILED: {stale}")
        summary["failed_stale_runs"] = stale
    orphans = abandon_orphans(client, name, key)
    if orphans:
        log(f"[run] abandoned version(s) {orphans} of '{name}': a crash stopped them before the gate")
        summary["abandoned_versions"] = orphans
    rescore = champion_rescorer(cfg, name, uri, features, log)
    existing = find_version(client, name, key)
    if existing is not None:
        promotion = finish(client, name, existing.version, gate, rescore)
        done = f"finished step(s) {list(promotion.resumed)}" if promotion.resumed else "nothing to do"
        log(f"[run] inputs and config unchanged: version {existing.version} of '{name}' exists; {done}")
        return JobOutcome(
            JobExit.OK if promotion.decision.promoted else JobExit.GATE_REFUSED,
            {
                **summary,
                "run_id": existing.run_id,
                "created": False,
                "resumed_steps": list(promotion.resumed),
                "model_uri": f"models:/{name}/{existing.version}",
                "metrics": {f"served_{split}_auc": read_aucs(existing)},
                "gate": gate_summary(promotion.decision),
            },
        )
    window = fingerprint(features, (split,))
    run_dir = workdir / "runs" / key[:16]
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a half-finished earlier attempt of this exact job
    with TrackedRun(cfg, workdir, features_dir=features, data_window=window, tags={TAG_SCHEDULED: lock_dir}) as tracked:
        log(f"[run] train {cfg.arch} ({cfg.mtl.method}/{cfg.mtl.optimizer}) -> {run_dir}, MLflow run {tracked.run_id}")
        try:
            result = run_training(
                cfg, features, run_dir, progress=False, trainer_kwargs={"callbacks": tracked.callbacks()}
            )
        except NonFiniteLossError as e:
            raise JobError(f"training diverged: {e}", JobExit.FAILURE) from e
        except ConfigError as e:  # a rule that needs the FeatureSpec (tasks naming an unknown task)
            raise JobError(f"{cfg.source_file}: {e}", JobExit.BAD_INPUT) from e
        log("[run] export ONNX (parity gate vs PyTorch on 10,000 test rows)")
        onnx_path = export_step(run_dir, features, cfg.scoring.fold_rows)
        tracked.log_result(result)
        log(f"[run] evaluate as served: {split} split through the scorer model, snapshot at its start")
        scorer, served = build_scorer_model(cfg, features, onnx_path, run_dir, split)
        tracked.log_served(served, split, result.evaluation)
        log(f"[run] {split} AUC point-in-time -> served: {gap_line(result.evaluation, served, split)}")
        log(f"[run] register '{name}' (alias challenger) and gate on the served figure")
        # the floors' reference: the popularity baseline on the same split (gate.floor_margin)
        served_block = {**served, "popularity": result.evaluation[split]["popularity"]}
        promotion = register_and_gate(
            tracked.client,
            name,
            tracked.run_id,
            scorer,
            key=key,
            evaluation={split: served_block},
            window=window,
            split=split,
            gate=gate,
            rescore=rescore,
            tags=served_tags(result.evaluation, served, split),
        )
    decision = promotion.decision
    experiment_id = tracked.client.get_run(tracked.run_id).info.experiment_id
    summary["follow_up"] = follow_up_commands(uri, name, cfg.data.source, cfg.data.input, workdir, experiment_id)
    test, popularity = result.evaluation["test"]["tasks"], result.evaluation["test"]["popularity"]
    summary.update(
        {
            "run_id": tracked.run_id,
            "created": True,
            "model_uri": f"models:/{name}/{promotion.version}",
            "metrics": {
                "test_auc": {t: m["auc"] for t, m in test.items()},
                "test_gauc": {t: m["gauc"] for t, m in test.items()},
                "popularity_test_auc": {t: m["auc"] for t, m in popularity.items()},
                f"served_{split}_auc": {t: m["auc"] for t, m in served["tasks"].items()},
                "served_snapshot_cutoff": served["snapshot_cutoff"],
                "best_epoch": result.best_epoch,
            },
            "gate": gate_summary(decision),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    return JobOutcome(JobExit.OK if decision.promoted else JobExit.GATE_REFUSED, summary)
