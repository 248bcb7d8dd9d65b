"""ONNX model loading (metadata checks) and the weighted score fusion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.spec import FeatureSpec
from aptrank.serving.errors import ModelLoadError
from aptrank.serving.fusion import Fusion, parse_weights
from aptrank.serving.onnx_model import load_onnx
from aptrank.serving.scorer import SCORE_BLOCK_ROWS, Scorer
from tests.serving.model_files import with_metadata


def test_loaded_model_carries_spec_tasks_and_digest(model_path: Path, etl_dir: Path) -> None:
    model = load_onnx(model_path)
    assert model.spec == FeatureSpec.read(etl_dir)
    assert model.task_names == ("click", "like", "finish")
    assert model.version == "sha256:" + hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    assert load_onnx(model_path, version="m/3").version == "m/3"


def test_load_refuses_missing_or_incomplete_models(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        load_onnx(tmp_path / "junk.onnx", allow_unverified=True)
    with pytest.raises(ModelLoadError, match=r"metadata lacks \['task_names'\]"):
        load_onnx(with_metadata(model_path, tmp_path / "a.onnx", task_names=None))
    with pytest.raises(ModelLoadError, match="feature_spec_hash"):
        load_onnx(with_metadata(model_path, tmp_path / "b.onnx", feature_spec_hash="0" * 64))
    with pytest.raises(ModelLoadError, match="must be tasks of the FeatureSpec"):
        load_onnx(with_metadata(model_path, tmp_path / "c.onnx", task_names=json.dumps(["click", "share"])))


def test_a_chunk_is_scored_in_blocks_with_the_same_bits(scorer: Scorer, candidates: pl.DataFrame) -> None:
    """Above ``SCORE_BLOCK_ROWS`` the scorer encodes and runs the model block by block: the same
    probabilities, scores and lookup counts as one encoding of the whole frame."""
    frame = pl.concat([candidates] * (2 * SCORE_BLOCK_ROWS // candidates.height + 1)).head(2 * SCORE_BLOCK_ROWS + 5)
    scored = scorer.score(frame)
    whole = scorer.features.encode(frame)
    expected = scorer.model.predict(whole.arrays)
    assert scored.probabilities.shape == (frame.height, len(scorer.task_names))
    assert np.array_equal(scored.probabilities, expected)
    assert np.array_equal(scored.score, scorer.fusion.score(expected))
    assert scored.lookup == whole.counts() and scored.lookup.rows == frame.height
    empty = scorer.score(frame.head(0))
    assert empty.probabilities.shape == (0, len(scorer.task_names)) and empty.lookup.rows == 0


def test_fusion_is_the_weighted_sum() -> None:
    probs = np.array([[0.5, 0.25, 1.0], [0.125, 0.5, 0.0]], dtype=np.float32)
    fusion = Fusion.build(["click", "like", "finish"], {"click": 1.0, "like": 2.0, "finish": 1.0})
    assert fusion.score(probs).tolist() == [2.0, 1.125]  # 0.5 + 2*0.25 + 1.0; 0.125 + 2*0.5 + 0
    only_like = Fusion.build(["click", "like", "finish"], {"like": 3.0})
    assert only_like.weights == (0.0, 3.0, 0.0)
    assert only_like.score(probs).tolist() == [0.75, 1.5]


def test_default_fusion_is_the_mean_and_rows_are_independent() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((50, 3), dtype=np.float32)
    fusion = Fusion.build(["a", "b", "c"])
    assert fusion.weights == (1 / 3, 1 / 3, 1 / 3)
    expected = [sum((1 / 3) * float(p) for p in row) for row in probs]
    assert fusion.score(probs).tolist() == expected
    assert [fusion.score(probs[i : i + 1])[0] for i in range(50)] == expected


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"share": 1.0}, r"task\(s\) \['share'\] are not outputs"),
        ({"click": -1.0}, "scoring.weights.click: must be a finite number >= 0"),
        ({"click": float("nan")}, "scoring.weights.click"),
        ({"click": 0.0}, "all weights are 0"),
    ],
)
def test_fusion_refuses_bad_weights(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fusion.build(["click", "like"], weights)


def test_parse_weights() -> None:
    assert parse_weights(["click=1", " like = 0.5"]) == {"click": 1.0, "like": 0.5}
    with pytest.raises(ValueError, match="expected TASK=WEIGHT"):
        parse_weights(["click"])
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_weights(["click=x"])
