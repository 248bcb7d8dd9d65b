"""The scoring core both scorers call: candidate rows -> model inputs -> ONNX probabilities -> fused score.

One object holds one model version with its features and fusion weights; the online server swaps
whole ``Scorer`` objects, so a request always sees one consistent version. Torch-free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.serving.encoded import Encoded, LookupCounts
from aptrank.serving.errors import ModelLoadError
from aptrank.serving.features import CandidateFeatures
from aptrank.serving.fusion import FUSION_FILE, Fusion, read_fusion
from aptrank.serving.onnx_model import PREDICT_ROWS, OnnxModel, load_onnx
from aptrank.serving.user_precompute import configured_max_bytes, precompute_users

log = logging.getLogger("aptrank.serve")
PROBABILITY_PREFIX = "p_"
SCORE_COLUMN = "score"
SCORE_BLOCK_ROWS = 128 * PREDICT_ROWS
"""Candidates encoded and run through the model at a time (:meth:`CandidateFeatures.encode_blocks`):
the block's input arrays (~1.3 KB a row) stay below glibc's mmap threshold and are reused, where a
whole 131,072-row chunk's arrays were fresh pages every chunk (2-vCPU VM, two workers: 0.9-1.4
CPU us/row of system time, 0.14-0.20 in blocks; ``bench/score.py``). A multiple of
``PREDICT_ROWS``: the model calls, so the scores, are the same as for the whole chunk."""


@dataclass(frozen=True)
class Scored:
    """Per candidate (input order): probabilities float32 [B, K], fused score float64 [B]; and the
    lookup's counts (rows, missing rows, OOV)."""

    probabilities: np.ndarray
    score: np.ndarray
    lookup: LookupCounts


class Scorer:
    """A model, the features it was trained on, and the fusion weights; for an ONNX model whose
    graph marks its per-user tensors, the first that fits computed once per snapshot user
    (:mod:`serving.user_precompute`; ``user_table_max_bytes``: the largest such table, 0 = never;
    None: ``APTRANK_USER_TABLE_MAX_BYTES`` when set, else 16 GiB)."""

    def __init__(
        self,
        model: OnnxModel,
        features: CandidateFeatures,
        weights: Mapping[str, float] | None = None,
        weights_origin: str = "given",
        user_table_max_bytes: int | None = None,
    ) -> None:
        if model.spec.hash != features.spec.hash:
            raise ModelLoadError(
                f"model {model.version} was trained on FeatureSpec {model.spec.hash[:12]}, but the feature "
                f"snapshot is for FeatureSpec {features.spec.hash[:12]}; point --features at the ETL output "
                "the model was trained on"
            )
        self.model = model
        self.features = features
        self.fusion = Fusion.build(model.task_names, weights)
        self.weights_origin = weights_origin
        pool = isinstance(model, OnnxModel)  # another runner (the PyTorch bench baseline) takes whole arrays
        bound = user_table_max_bytes if user_table_max_bytes is not None else configured_max_bytes()
        self.user_part = precompute_users(model, features, bound) if pool else None

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.model.task_names

    def output_columns(self) -> list[str]:
        return [PROBABILITY_PREFIX + t for t in self.task_names] + [SCORE_COLUMN]

    def score(self, candidates: pl.DataFrame) -> Scored:
        """Score ``candidates`` (``user_id``, ``item_id``, ``ts``, the spec's context columns)."""
        counts, parts = LookupCounts(), []
        for encoded in self.features.encode_blocks(candidates, SCORE_BLOCK_ROWS, sequences=self.user_part is None):
            counts += encoded.counts()
            if encoded.rows:
                parts.append(self.predict(encoded))
        if not parts:
            return Scored(np.zeros((0, len(self.task_names)), np.float32), np.zeros(0, np.float64), counts)
        probabilities = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return Scored(probabilities, self.fusion.score(probabilities), counts)

    def predict(self, encoded: Encoded) -> np.ndarray:
        """Probabilities of encoded candidates: with a per-user table, the rest of the graph on the
        snapshot users' table rows and, for users without one, the user part run on their rows
        (whose sequence arrays the full lookup encoded; :meth:`UserPart.user_values`); else the
        whole graph."""
        rows = encoded.user_rows
        if self.user_part is not None and rows is not None:
            return self.user_part.predict(encoded.arrays, rows)
        return self.model.predict(encoded.arrays)


def load_scorer(
    model_path: str | Path,
    features_dir: str | Path,
    *,
    weights: Mapping[str, float] | None = None,
    threads: int = 1,
    version: str | None = None,
    features: CandidateFeatures | None = None,
    allow_unverified: bool = False,
) -> Scorer:
    """Open an ONNX model and the ETL output it was trained on (``features`` reuses an already
    loaded snapshot when its FeatureSpec is the model's, as after a swap that kept the features).

    Fusion weights: ``weights`` when given (command line, job config), else the weights registered
    with the model (the ``fusion.json`` beside a scorer model's ONNX file,
    :mod:`serving.pyfunc_model`), else equal weights; the choice is logged."""
    model = load_onnx(model_path, threads=threads, version=version, allow_unverified=allow_unverified)
    if features is None or features.spec.hash != model.spec.hash:
        features = CandidateFeatures(features_dir)
    chosen, origin = model_weights(model_path, weights)
    scorer = Scorer(model, features, chosen, origin)
    log.info("model %s: fusion weights %s (%s)", scorer.version, scorer.fusion.as_dict(), origin)
    return scorer


def model_weights(
    model_path: str | Path, override: Mapping[str, float] | None
) -> tuple[Mapping[str, float] | None, str]:
    """(weights, where they come from): ``override`` if not empty, else the model's bundled
    ``fusion.json``, else None (equal weights)."""
    if override:
        return override, "given on the command line or in the job config"
    bundled = Path(model_path).with_name(FUSION_FILE)
    if bundled.is_file():
        try:
            return read_fusion(bundled), f"registered with the model: {bundled.name}"
        except ValueError as e:
            raise ModelLoadError(str(e)) from e
    return None, "equal: the model bundles no weights and none were given"
