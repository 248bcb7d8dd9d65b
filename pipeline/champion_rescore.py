"""Rescore the champion on the challenger's window without letting it see the future (issue #20).

The gate compares a challenger with the champion on the challenger's evaluation split (:mod:`pipeline.gate`).
When the champion was evaluated on another window it is rescored there, and its registered version
bundles the feature snapshot as of the end of all *its* data. That snapshot can be newer than the
start of the challenger's split (a daily run: yesterday's champion saw the first test days; a
backfill: the champion saw days after the window): scoring the split with it would hand the champion
counts and histories of the very impressions it is scored on, the leakage that makes offline metrics
lie (Kaufman et al., "Leakage in Data Mining", TKDD 2012).

So the champion is scored with features no newer than the challenger's:

1. when its FeatureSpec equals the challenger's apart from the snapshot cutoff (same vocabularies,
   same dense statistics: the daily ETL moves only the cutoff), with the challenger's own evaluation
   snapshot, as of the split's start (:func:`pipeline.served_evaluation.snapshot_as_of_split`):
   both models then see exactly the same features;
2. else with its bundled snapshot when that one is not newer than the split's start;
3. else no leak-free comparison exists: :class:`~pipeline.gate.IncomparableError`, which the gate
   records as a refusal with this reason (the job exits 3).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from aptrank.data.spec import FeatureSpec
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.gate import GateError, IncomparableError
from aptrank.pipeline.served_evaluation import same_but_cutoff, snapshot_as_of_split, with_snapshot_of


def _utc(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def split_start(spec: FeatureSpec, split: str) -> dt.datetime:
    """When ``split`` of the ETL output with ``spec`` starts (UTC)."""
    start = spec.extras.get("splits", {}).get(f"{split}_start")
    if start is None:
        raise GateError(f"feature_spec.json: extras.splits has no '{split}_start'")
    return _utc(start)


def snapshot_cutoff(spec: FeatureSpec) -> dt.datetime:
    """The instant a snapshot's counts and histories run up to (UTC)."""
    return _utc(spec.extras["snapshot"]["cutoff"])


def leak_free_features(
    model_features: Path, challenger_snapshot: Path, start: dt.datetime, dest: Path, what: str
) -> tuple[Path, dt.datetime]:
    """(the ETL output to score ``what``, the champion trained on ``model_features``, with on a split
    starting at ``start``; the instant its snapshot runs to). ``challenger_snapshot``: the
    challenger's evaluation features, snapshot as of ``start``. Raises :class:`IncomparableError`
    when neither is leak-free (module docstring)."""
    own = FeatureSpec.read(model_features)
    if same_but_cutoff(own, FeatureSpec.read(challenger_snapshot)):
        return with_snapshot_of(model_features, challenger_snapshot, dest), start
    cutoff = snapshot_cutoff(own)
    if cutoff <= start:
        return model_features, cutoff
    raise IncomparableError(
        f"no leak-free comparison: {what}'s snapshot runs to {cutoff.isoformat()}, after the evaluation split's "
        f"start {start.isoformat()}, and its FeatureSpec differs from the challenger's beyond the cutoff, so "
        "the challenger's snapshot cannot score it; retrain the champion's config on this window to compare"
    )


def champion_rescorer(cfg: JobConfig, name: str, tracking_uri: str, features: Path, log: Any) -> Any:
    """The gate's ``rescore`` for the job on ``features``: the champion version, downloaded and
    verified, scored on the split as served (:func:`pipeline.version_eval.evaluate_version`) with
    :func:`leak_free_features`."""
    from aptrank.pipeline.served_evaluation import ServedEvaluationError
    from aptrank.pipeline.version_eval import VersionEvalError, evaluate_version
    from aptrank.serving.errors import ServingError
    from aptrank.serving.model_source import ModelSource

    def rescore(champion: Any, split: str, window: str) -> dict[str, float]:
        uri = f"models:/{name}/{champion.version}"
        log(f"[run] champion version {champion.version} was evaluated on another window: rescoring it on {split}")
        start = split_start(FeatureSpec.read(features), split)
        with tempfile.TemporaryDirectory(prefix="aptrank-rescore-") as tmp:
            try:
                fetched = ModelSource(uri, tracking_uri).fetch(Path(tmp) / "champion")
                if fetched.features_dir is None:
                    raise IncomparableError(f"no leak-free comparison: {uri} bundles no feature snapshot")
                snapshot = snapshot_as_of_split(cfg.data, features, split, Path(tmp) / "as_of").features
                what = f"champion version {champion.version}"
                chosen, as_of = leak_free_features(fetched.features_dir, snapshot, start, Path(tmp) / "features", what)
                log(f"[run] {what} scored with a snapshot as of {as_of.isoformat()} ({split} from {start.isoformat()})")
                return evaluate_version(str(fetched.path), None, features, split, snapshot=chosen)
            except (VersionEvalError, ServedEvaluationError, ServingError) as e:
                raise GateError(
                    f"'{name}': rescoring champion version {champion.version} on {split} failed: {e}"
                ) from e

    return rescore
