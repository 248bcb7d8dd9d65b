"""Each snapshot user's history pooled once (serving.user_precompute) on the tiny trained model:
the same bits as the whole graph for known users, users with empty histories and unknown users; the
whole graph for models without the marker, above the size bound or with a marker that does not
split the graph; the lookup skips the sequence arrays on that path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
from onnx import TensorProto, helper

from aptrank.data.spec import META_USER_SEQUENCE, SEQUENCE_INPUTS, USER_SEQUENCE_TENSOR
from aptrank.serving.onnx_model import PREDICT_ROWS, PROVIDERS, load_onnx
from aptrank.serving.scorer import SCORE_BLOCK_ROWS, Scorer, load_scorer
from tests.serving.conftest import WEIGHTS
from tests.serving.model_files import with_metadata


def _whole(scorer: Scorer) -> Scorer:
    """The same model and snapshot scored by the whole graph."""
    whole = Scorer(scorer.model, scorer.features, WEIGHTS, user_table_max_bytes=0)
    assert whole.pooled is None
    return whole


def _same_scores(a: Scorer, b: Scorer, frame: pl.DataFrame) -> None:
    x, y = a.score(frame), b.score(frame)
    assert np.array_equal(x.probabilities, y.probabilities) and np.array_equal(x.score, y.score)
    assert x.lookup == y.lookup


def test_the_scorer_pools_each_snapshot_users_history_once(scorer: Scorer, model_path: Path) -> None:
    """The table has a row per snapshot user, the bits the whole graph pools for that user: the
    registered graph with its marked tensor as an extra output, run on the users' encoded histories
    at the scorer's rows per call."""
    assert load_onnx(model_path).user_sequence == USER_SEQUENCE_TENSOR
    pooled, users = scorer.pooled, scorer.features.users
    assert pooled is not None and users is not None
    assert pooled.table.shape == (len(users.keys), 2 * 4) and pooled.table.dtype == np.float32  # 2 histories x dim 4
    proto = onnx.load(str(model_path))
    proto.graph.output.append(helper.make_tensor_value_info(USER_SEQUENCE_TENSOR, TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=PROVIDERS)
    rows = scorer.features.encode(scorer.features.sample(len(users.keys)))
    assert rows.user_rows is not None
    whole = np.concatenate(
        [
            session.run([USER_SEQUENCE_TENSOR], {n: a[s : s + PREDICT_ROWS] for n, a in rows.arrays.items()})[0]
            for s in range(0, rows.rows, PREDICT_ROWS)
        ]
    )
    assert np.array_equal(pooled.table[rows.user_rows], whole)
    empty = (users.arrays["sequence_lengths"] == 0).all(axis=1)
    assert 0 < empty.sum() < len(empty), "the sample has users with and without histories"
    assert not pooled.table[empty].any() and pooled.table[~empty].any(axis=1).all()


def test_known_empty_and_unknown_users_score_the_whole_graphs_bits(scorer: Scorer, candidates: pl.DataFrame) -> None:
    users = scorer.features.users
    assert users is not None
    empty_history = users.keys[(users.arrays["sequence_lengths"] == 0).all(axis=1)]
    n = candidates.height
    frame = candidates.with_columns(
        pl.when(pl.int_range(n) % 3 == 1)
        .then(pl.lit(int(empty_history[0])))
        .otherwise(pl.col("user_id"))
        .cast(candidates["user_id"].dtype)
        .alias("user_id")
    )
    whole = _whole(scorer)
    _same_scores(scorer, whole, frame)  # known users, a third of them with an empty history
    unknown = frame.with_columns(
        pl.when(pl.int_range(n) % 7 == 0).then(pl.col("user_id") + 10**9).otherwise(pl.col("user_id")).alias("user_id")
    )
    _same_scores(scorer, whole, unknown)  # with unknown users: their chunk runs the whole graph
    assert scorer.score(unknown).lookup.missing_rows["user"] == len(range(0, n, 7))
    big = pl.concat([frame] * (SCORE_BLOCK_ROWS // n + 1))
    _same_scores(scorer, whole, big)  # more than one block
    _same_scores(scorer, whole, frame.head(1))  # one candidate, as an online request of one


def test_the_lookup_skips_the_sequence_arrays_on_that_path(scorer: Scorer, candidates: pl.DataFrame) -> None:
    (lean,) = scorer.features.encode_blocks(candidates, SCORE_BLOCK_ROWS, sequences=False)
    (full,) = scorer.features.encode_blocks(candidates, SCORE_BLOCK_ROWS)
    assert set(full.arrays) - set(lean.arrays) == set(SEQUENCE_INPUTS)
    assert all(np.array_equal(lean.arrays[k], full.arrays[k]) for k in lean.arrays)
    assert lean.user_rows is not None and np.array_equal(lean.user_rows, full.user_rows)  # type: ignore[arg-type]
    assert np.array_equal(scorer.features.users.keys[lean.user_rows], candidates["user_id"].to_numpy())  # type: ignore[union-attr]
    assert lean.slice(5, 9).user_rows.tolist() == lean.user_rows[5:9].tolist()  # type: ignore[union-attr]


def test_the_whole_graph_serves_otherwise(
    scorer: Scorer,
    model_path: Path,
    etl_dir: Path,
    candidates: pl.DataFrame,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An old export (no marker), a table above the size bound, a marker that does not separate the
    sequence inputs: the whole graph, the same scores, and the reason logged for the last two."""
    old = load_scorer(with_metadata(model_path, tmp_path / "old.onnx", **{META_USER_SEQUENCE: None}), etl_dir)
    assert old.model.user_sequence is None and old.pooled is None
    _same_scores(scorer, Scorer(old.model, old.features, WEIGHTS), candidates)
    (concat,) = [n.output[0] for n in onnx.load(str(model_path)).graph.node if USER_SEQUENCE_TENSOR in n.input]
    with caplog.at_level(logging.WARNING, logger="aptrank.serve"):
        capped = Scorer(scorer.model, scorer.features, WEIGHTS, user_table_max_bytes=1024)
        odd = load_scorer(with_metadata(model_path, tmp_path / "odd.onnx", **{META_USER_SEQUENCE: concat}), etl_dir)
    assert capped.pooled is None and odd.pooled is None
    assert "above 0.0 MiB; running the whole graph" in caplog.text
    assert f"does not split at '{concat}'" in caplog.text and "also reads ['categorical', 'dense']" in caplog.text
    _same_scores(scorer, capped, candidates)
    _same_scores(scorer, Scorer(odd.model, odd.features, WEIGHTS), candidates)
