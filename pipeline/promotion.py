"""Promotion as a resumable state machine (issue #20): a killed job never leaves a version that
claims more than was done, and the next run finishes what the crash left undone.

A version's promotion goes through :data:`STEPS`, each recorded on the version as the registry tag
``aptrank.step.<step> = done`` once it is durable:

``logged``      the model file is logged to the MLflow run (recorded together with ``created``);
``created``     the version exists, with its evaluation tags and idempotency key (one MLflow call);
``challenger``  the ``challenger`` alias points at it;
``gated``       the gate's decision (floors, then the champion on the same window) is on its tags;
``champion``    the ``champion`` alias was moved to it (promoted versions only).

:func:`register_and_gate` runs every step for a new training; :func:`finish` resumes a version found
by its idempotency key from its first undone step (a gated version is final: it is not gated
again). :func:`abandon_orphans` retires versions a crash left half-done under an older key (the data
window moved on): they lose the ``challenger`` alias if they hold it and are tagged ``abandoned``.

A crash before ``created`` leaves no version (only a logged model in a run): the rerun trains again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from aptrank.pipeline.gate import TAG_PREFIX, GateDecision, Rescore, crown, run_gate
from aptrank.pipeline.mlflow_store import mlflow_errors
from aptrank.pipeline.registry import (
    CHALLENGER,
    DONE,
    TAG_KEY,
    TAG_STEP,
    LoggableModel,
    create_version,
    digest_tags,
    eval_tags,
    log_model,
    read_aucs,
)

STEPS = ("logged", "created", "challenger", "gated", "champion")
TAG_ABANDONED = TAG_STEP + "abandoned"


@dataclass(frozen=True)
class GateSettings:
    """The config's ``gate`` section as the gate needs it."""

    tolerance: float
    floor_margin: float
    floors: Mapping[str, float]

    @classmethod
    def of(cls, gate: Any) -> GateSettings:
        return cls(float(gate.auc_tolerance), float(gate.floor_margin), dict(gate.floors))


@dataclass(frozen=True)
class Promotion:
    """Where a version's promotion ended: its decision and the steps this call did."""

    version: str
    decision: GateDecision
    resumed: tuple[str, ...] = ()


def step_done(name: str, version: str | None, step: str) -> None:
    """Called once ``step`` is durable (``version`` None: no version exists yet). Does nothing; the
    crash tests replace it in a child process to SIGKILL the job exactly after a step."""


def done_steps(version: ModelVersion) -> set[str]:
    """The steps recorded on ``version``; a version registered before step tags existed (it has a
    gate decision but no step tags) counts as gated, and as champion when it was promoted."""
    tags = version.tags
    steps = {s for s in STEPS if tags.get(TAG_STEP + s) == DONE}
    if not steps and TAG_PREFIX + "decision" in tags:
        steps = {"logged", "created", "challenger", "gated"}
        if tags[TAG_PREFIX + "decision"] == "promoted":
            steps.add("champion")
    return steps


def _mark(client: MlflowClient, name: str, version: str, step: str) -> None:
    with mlflow_errors(client.tracking_uri, f"record step {step} of '{name}' version {version}"):
        client.set_model_version_tag(name, version, TAG_STEP + step, DONE)
    step_done(name, version, step)


def recorded_decision(version: ModelVersion) -> GateDecision:
    """The gate decision stored on a gated version's tags."""
    tags = version.tags

    def numbers(prefix: str) -> dict[str, float]:
        return {k.removeprefix(prefix): float(v) for k, v in tags.items() if k.startswith(prefix)}

    champion = tags.get(TAG_PREFIX + "champion_version", "none")
    return GateDecision(
        promoted=tags.get(TAG_PREFIX + "decision") == "promoted",
        reason=tags.get(TAG_PREFIX + "reason", ""),
        version=str(version.version),
        champion_version=None if champion == "none" else champion,
        tolerance=float(tags.get(TAG_PREFIX + "tolerance", "nan")),
        challenger_auc=numbers(TAG_PREFIX + "challenger_auc.") or read_aucs(version),
        champion_auc=numbers(TAG_PREFIX + "champion_auc."),
        floors=numbers(TAG_PREFIX + "floor."),
        rescored=tags.get(TAG_PREFIX + "champion_rescored") == "true",
    )


def finish(
    client: MlflowClient, name: str, version: str | int, gate: GateSettings, rescore: Rescore | None = None
) -> Promotion:
    """Do the steps of ``version`` that are not recorded yet, in order; return its decision."""
    version = str(version)
    with mlflow_errors(client.tracking_uri, f"read '{name}' version {version}"):
        current = client.get_model_version(name, version)
    done, resumed = done_steps(current), []
    if "challenger" not in done and "gated" not in done:
        with mlflow_errors(client.tracking_uri, f"set alias challenger of '{name}' to version {version}"):
            client.set_registered_model_alias(name, CHALLENGER, version)
        _mark(client, name, version, "challenger")
        resumed.append("challenger")
    if "gated" not in done:
        decision = run_gate(
            client,
            name,
            version,
            tolerance=gate.tolerance,
            rescore=rescore,
            floor_margin=gate.floor_margin,
            floors=gate.floors,
            crown_it=False,
        )
        _mark(client, name, version, "gated")
        resumed.append("gated")
    else:
        decision = recorded_decision(current)
    if decision.promoted and "champion" not in done:
        crown(client, name, decision)
        _mark(client, name, version, "champion")
        resumed.append("champion")
    return Promotion(version, decision, tuple(resumed))


def register_and_gate(
    client: MlflowClient,
    name: str,
    run_id: str,
    model: str | Path | LoggableModel,
    *,
    key: str,
    evaluation: Mapping[str, Any],
    window: str,
    split: str,
    gate: GateSettings,
    rescore: Rescore | None = None,
    tags: Mapping[str, str] | None = None,
) -> Promotion:
    """Every step for a new training: log the model (a file or the job's scorer model), create the
    version with its evaluation ``tags``, then :func:`finish`."""
    tags = {**eval_tags(evaluation, split, window), **(tags or {})}
    source, model_id = log_model(client, run_id, model)
    tags.update(digest_tags(client, source))
    step_done(name, None, "logged")
    created = create_version(client, name, run_id, source, key=key, tags=tags, model_id=model_id, alias=None)
    step_done(name, str(created.version), "created")
    return finish(client, name, created.version, gate, rescore)


def abandon_orphans(client: MlflowClient, name: str, key: str) -> list[str]:
    """Versions of ``name`` under another key than ``key`` whose promotion a crash cut short before
    the gate: tag them abandoned and take ``challenger`` from them; return their numbers."""
    with mlflow_errors(client.tracking_uri, f"search versions of '{name}' for orphans"):
        versions = client.search_model_versions(f"name = '{name}'") if "'" not in name else []
        aliases = client.get_registered_model(name).aliases if versions else {}
        orphans = []
        for v in sorted(versions, key=lambda v: int(v.version)):
            steps = done_steps(v)
            if "created" not in steps or "gated" in steps or v.tags.get(TAG_KEY) == key:
                continue
            if v.tags.get(TAG_ABANDONED) == DONE:  # retired by an earlier run
                continue
            if str(aliases.get(CHALLENGER)) == str(v.version):
                client.delete_registered_model_alias(name, CHALLENGER)
            client.set_model_version_tag(name, v.version, TAG_ABANDONED, DONE)
            orphans.append(str(v.version))
    return orphans
