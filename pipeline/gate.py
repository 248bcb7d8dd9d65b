"""The evaluation gate: the only way a version becomes ``champion`` (DESIGN.md contract 6).

Rule (issue #6), on the same evaluation window and split: the challenger is promoted when no task's
AUC is lower than the champion's by more than ``gate.auc_tolerance`` and its mean AUC over those
tasks is not lower. The first version of a registered model becomes champion. The decision, the
reason and the numbers are written on the challenger as ``aptrank.gate.*`` version tags.

Floors (issue #20): before any comparison, every task's AUC must reach its floor, first version
included; default floor = the popularity baseline's AUC on the same split and window (the
``aptrank.popularity_auc.<task>`` tags) plus ``gate.floor_margin``; ``gate.floors`` sets a task's
floor explicitly. A version below a floor is refused and stays a challenger. A constant model (AUC
0.5, e.g. ``mtl.lr=1000``) is refused this way. The popularity baseline is the "most popular item"
reference ranker of He et al., "Neural Collaborative Filtering", WWW 2017 (ItemPop).

AUCs are read from the versions' ``aptrank.auc.<task>`` tags (written at registration; a job's
versions carry the *served* figures, the scorer model scored with the snapshot serving had,
:mod:`pipeline.served_evaluation`, tag ``aptrank.eval_features=served``). When the champion was
evaluated on another window or split, or measured with other features, its recorded numbers are not comparable: the
caller passes ``rescore(champion_version, split, window) -> {task: auc}`` (e.g. scoring the
champion's ONNX model on the challenger's test window), or the gate refuses to decide. A rescore
that finds no fair comparison (:class:`IncomparableError`: the champion could only be scored with
features newer than the window, :mod:`pipeline.champion_rescore`) makes a recorded refusal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from aptrank.pipeline.mlflow_store import check_reachable, mlflow_errors
from aptrank.pipeline.registry import (
    CHAMPION,
    TAG_EVAL_FEATURES,
    TAG_POPULARITY_AUC,
    TAG_SPLIT,
    TAG_WINDOW,
    RegistryError,
    read_aucs,
)

TAG_PREFIX = "aptrank.gate."
Rescore = Callable[[ModelVersion, str, str], Mapping[str, float]]


class GateError(RegistryError):
    """The gate cannot decide (no comparable numbers); nothing was promoted."""


class IncomparableError(GateError):
    """``rescore`` found no fair way to score the champion on the challenger's window (e.g. only with
    features newer than the window, :mod:`pipeline.champion_rescore`): the gate records a refusal
    with this reason instead of comparing."""


@dataclass(frozen=True)
class GateDecision:
    """Outcome of one gate; ``champion_version`` is the champion it was compared with (None: first)."""

    promoted: bool
    reason: str
    version: str
    champion_version: str | None
    tolerance: float
    challenger_auc: dict[str, float] = field(default_factory=dict)
    champion_auc: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    rescored: bool = False  # the champion's AUCs were recomputed on the challenger's window

    def tags(self) -> dict[str, str]:
        """The version tags that record this decision."""
        out = {
            TAG_PREFIX + "decision": "promoted" if self.promoted else "refused",
            TAG_PREFIX + "reason": self.reason,
            TAG_PREFIX + "tolerance": repr(self.tolerance),
            TAG_PREFIX + "champion_version": self.champion_version or "none",
        }
        if self.rescored:
            out[TAG_PREFIX + "champion_rescored"] = "true"
        out.update({f"{TAG_PREFIX}challenger_auc.{t}": repr(v) for t, v in self.challenger_auc.items()})
        out.update({f"{TAG_PREFIX}champion_auc.{t}": repr(v) for t, v in self.champion_auc.items()})
        out.update({f"{TAG_PREFIX}floor.{t}": repr(v) for t, v in self.floors.items()})
        return out


def floors_for(version: ModelVersion, margin: float, explicit: Mapping[str, float] | None = None) -> dict[str, float]:
    """task -> minimum AUC for ``version``: ``explicit[task]`` when given, else the popularity
    baseline's AUC recorded on the version plus ``margin`` (tasks with neither have no floor)."""
    if not math.isfinite(margin):
        raise ValueError(f"gate.floor_margin must be a finite number, got {margin}")
    floors = {t: v + margin for t, v in read_aucs(version, TAG_POPULARITY_AUC).items() if math.isfinite(v)}
    floors.update({t: float(v) for t, v in (explicit or {}).items()})
    return floors


def below_floor(challenger: Mapping[str, float], floors: Mapping[str, float]) -> str | None:
    """Why ``challenger`` is below its floors (a task's AUC missing, not finite or lower), or None."""
    low = [t for t in sorted(floors) if not (math.isfinite(challenger.get(t, math.nan)) and challenger[t] >= floors[t])]
    if not low:
        return None
    detail = ", ".join(f"{t} {challenger.get(t, math.nan):.4f} < {floors[t]:.4f}" for t in low)
    return f"AUC below the floor (popularity baseline + gate.floor_margin, or gate.floors): {detail}"


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    tolerance: float,
    floors: Mapping[str, float] | None = None,
) -> tuple[bool, str]:
    """(promote?, reason) by the rule of the module docstring: floors first, then the champion's tasks."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"gate.auc_tolerance must be a finite number >= 0, got {tolerance}")
    low = below_floor(challenger, floors or {})
    if low is not None:
        return False, low
    if champion is None:
        return True, "first model of the registered model: promoted without comparison"
    missing = sorted(set(champion) - set(challenger))
    if missing:
        return False, f"challenger has no AUC for the champion's task(s) {missing}"
    bad = [t for t in champion if math.isfinite(champion[t]) and not math.isfinite(challenger[t])]
    if bad:
        return False, f"challenger AUC is not finite for task(s) {bad}"
    tasks = [t for t in champion if math.isfinite(champion[t]) and math.isfinite(challenger[t])]
    if not tasks:
        return False, "no task has a finite AUC for both models"
    worse = [(t, champion[t] - challenger[t]) for t in tasks if challenger[t] < champion[t] - tolerance]
    if worse:
        detail = ", ".join(f"{t} {challenger[t]:.4f} vs {champion[t]:.4f} (-{d:.4f})" for t, d in worse)
        return False, f"AUC worse than the champion by more than {tolerance:g}: {detail}"
    mean_c = sum(challenger[t] for t in tasks) / len(tasks)
    mean_h = sum(champion[t] for t in tasks) / len(tasks)
    if mean_c < mean_h:
        return False, f"mean AUC {mean_c:.4f} is lower than the champion's {mean_h:.4f} over {tasks}"
    return True, f"no task worse by more than {tolerance:g}; mean AUC {mean_c:.4f} >= champion's {mean_h:.4f}"


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(name, str(version))


def run_gate(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    tolerance: float,
    rescore: Rescore | None = None,
    floor_margin: float | None = None,
    floors: Mapping[str, float] | None = None,
    crown_it: bool = True,
) -> GateDecision:
    """Gate ``version`` of ``name`` against its floors (none when ``floor_margin`` and ``floors`` are
    None) and the current champion; record the decision as version tags and, when promoted and
    ``crown_it``, move the ``champion`` alias to it (:func:`crown`)."""
    version = str(version)
    uri = client.tracking_uri
    check_reachable(uri)
    with mlflow_errors(uri, f"read versions of '{name}' for the gate"):
        challenger = client.get_model_version(name, version)
        champion = _champion(client, name)
    challenger_auc = read_aucs(challenger)
    if not challenger_auc:
        raise GateError(
            f"'{name}' version {version} has no aptrank.auc.* tags: it was not registered by "
            "aptrank.pipeline.registry.register_version"
        )
    champion_version = None if champion is None else str(champion.version)  # int or str, by store
    if champion_version == version:
        return GateDecision(True, "already the champion", version, version, tolerance, challenger_auc, challenger_auc)
    limits = {} if floor_margin is None and floors is None else floors_for(challenger, floor_margin or 0.0, floors)
    champion_auc, rescored, incomparable = None, False, None
    if champion is not None:
        split, window = challenger.tags.get(TAG_SPLIT, ""), challenger.tags.get(TAG_WINDOW, "")
        measured = challenger.tags.get(TAG_EVAL_FEATURES)
        same = (champion.tags.get(TAG_SPLIT), champion.tags.get(TAG_WINDOW), champion.tags.get(TAG_EVAL_FEATURES)) == (
            split,
            window,
            measured,
        )
        if same:
            champion_auc = read_aucs(champion)
        elif rescore is not None:
            try:
                champion_auc = {t: float(v) for t, v in rescore(champion, split, window).items()}
                rescored = True
            except IncomparableError as e:
                incomparable = str(e)
        else:
            raise GateError(
                f"'{name}': champion version {champion_version} was evaluated on split "
                f"'{champion.tags.get(TAG_SPLIT)}' window {champion.tags.get(TAG_WINDOW)} "
                f"({champion.tags.get(TAG_EVAL_FEATURES) or 'point-in-time'} features), challenger version "
                f"{version} on split '{split}' window {window} ({measured or 'point-in-time'} features); the gate "
                "compares on the same window and features: pass rescore= to score the champion there"
            )
    promoted, reason = (
        (False, incomparable) if incomparable else decide(challenger_auc, champion_auc, tolerance, limits)
    )
    decision = GateDecision(
        promoted,
        reason,
        version,
        champion_version,
        tolerance,
        challenger_auc,
        dict(champion_auc or {}),
        limits,
        rescored,
    )
    with mlflow_errors(uri, f"record the gate decision on '{name}' version {version}"):
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, version, key, value)
    if promoted and crown_it:
        crown(client, name, decision)
    return decision


def crown(client: MlflowClient, name: str, decision: GateDecision) -> None:
    """Move ``champion`` to the promoted version and mark the one it replaced (idempotent)."""
    new, old = decision.version, decision.champion_version
    with mlflow_errors(client.tracking_uri, f"set alias champion of '{name}' to version {new}"):
        client.set_registered_model_alias(name, CHAMPION, new)
        if old is not None and old != new:
            client.set_model_version_tag(name, old, TAG_PREFIX + "superseded_by", new)
