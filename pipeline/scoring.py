"""Scoring as a library: the fusion weights of a job config, and a registered model opened for
scoring DataFrames in a notebook (:func:`aptrank.load_scorer`). ``aptrank score`` and
``aptrank serve`` take their fusion weights from here."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from aptrank.serving.batch_scoring import ScoredFrame
    from aptrank.serving.scorer import Scorer


def fusion_weights(config: str | Path | None, weights: Sequence[str] | None) -> dict[str, float]:
    """``scoring.weights`` of the job config ``config``, then ``TASK=W`` overrides (``--weight``)."""
    from aptrank.serving.fusion import parse_weights

    out: dict[str, float] = {}
    if config is not None:
        from aptrank.pipeline.config import load_config

        out.update(load_config(Path(config)).scoring.weights)
    out.update(parse_weights(list(weights or [])))
    return out


def scoring_engine(config: str | Path | None, engine: str | None) -> str:
    """Where ``aptrank score`` runs: ``engine`` (``--engine``) if given, else the job config's
    ``scoring.engine``, else ``local``."""
    if engine is not None:
        return engine
    if config is None:
        return "local"
    from aptrank.pipeline.config import load_config

    return load_config(Path(config)).scoring.engine


class ModelScorer:
    """A model version with its feature snapshot, ready to score candidate DataFrames (polars or
    pandas: ``user_id``, ``item_id``, ``ts`` and the FeatureSpec's context columns)."""

    def __init__(self, scorer: Scorer, workspace: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.scorer = scorer
        self._workspace = workspace  # the downloaded model and snapshot live as long as this object

    @property
    def version(self) -> str:
        return self.scorer.version

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.scorer.task_names

    def score_frame(self, candidates: Any) -> ScoredFrame:
        """Scored rows (input columns + ``p_<task>`` + ``score``) and rejected rows (+ ``reason``)."""
        import polars as pl

        from aptrank.serving.batch_scoring import score_frame

        frame = candidates if isinstance(candidates, pl.DataFrame) else pl.from_pandas(candidates)
        return score_frame(self.scorer, frame)

    def close(self) -> None:
        """Delete the downloaded model and snapshot (scoring afterwards is undefined)."""
        if self._workspace is not None:
            self._workspace.cleanup()
            self._workspace = None

    def __enter__(self) -> ModelScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(self, candidates: Any) -> pl.DataFrame:
        """The scorable rows of ``candidates`` with ``p_<task>`` per task and the fused ``score``
        (rows that cannot be scored are left out; :meth:`score_frame` has them with a reason)."""
        return self.score_frame(candidates).scored


def load_scorer(
    model: str | Path,
    *,
    features: str | Path | None = None,
    tracking_uri: str | None = None,
    weights: Mapping[str, float] | None = None,
    threads: int = 1,
    allow_unverified: bool = False,
) -> ModelScorer:
    """Open ``model`` (an ONNX file, ``models:/NAME@ALIAS`` or ``models:/NAME/N``) with its feature
    snapshot: ``features`` (an ETL output) or the one registered with the model's run. ``weights``:
    fusion weights per task (default: the mean). ``allow_unverified``: load a model that carries no
    SHA-256 (:data:`aptrank.serving.model_integrity.ALLOW_UNVERIFIED_FLAG`), with a warning."""
    from aptrank.serving.errors import ServingError
    from aptrank.serving.model_source import ModelSource
    from aptrank.serving.scorer import load_scorer as open_scorer

    workspace = tempfile.TemporaryDirectory(prefix="aptrank-scorer-")
    try:
        fetched = ModelSource(str(model), tracking_uri, allow_unverified).fetch(Path(workspace.name))
        feats = features or fetched.features_dir
        if feats is None:
            raise ServingError(f"model {fetched.version}: no feature snapshot; pass --features DIR (ETL output)")
        scorer = open_scorer(
            fetched.path,
            feats,
            weights=weights,
            threads=threads,
            version=fetched.version,
            allow_unverified=allow_unverified,
        )
    except BaseException:
        workspace.cleanup()
        raise
    return ModelScorer(scorer, workspace)
