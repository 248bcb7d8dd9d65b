"""The per-user part of the graph computed once per snapshot user (serving.user_precompute) on the
tiny trained model: the same bits as the whole graph for known users, users with empty histories
and unknown users, with the first layer's user part or the pooled histories; the next tensor or
the whole graph for models without the metadata, above the size bound or with a tensor that does
not split the graph; the lookup skips the history arrays on that path; blocks with unknown users or
items still use the table (the user part runs on the unknown users' rows only), never the whole
graph."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
from onnx import TensorProto, helper

from aptrank.data.spec import META_USER_TENSORS, SEQUENCE_INPUTS, USER_FIRST_LAYER_TENSOR, USER_SEQUENCE_TENSOR
from aptrank.serving.onnx_model import PREDICT_ROWS, PROVIDERS, OnnxModel, load_onnx
from aptrank.serving.scorer import SCORE_BLOCK_ROWS, Scorer, load_scorer
from tests.serving.conftest import WEIGHTS
from tests.serving.model_files import with_metadata


def _with(scorer: Scorer, *tensors: str, max_bytes: int | None = None) -> Scorer:
    """The same model and snapshot with only ``tensors`` recorded (none: the whole graph)."""
    model = dataclasses.replace(scorer.model, user_tensors=tensors)
    return Scorer(model, scorer.features, WEIGHTS, **({} if max_bytes is None else {"user_table_max_bytes": max_bytes}))


def _same_scores(a: Scorer, b: Scorer, frame: pl.DataFrame) -> None:
    x, y = a.score(frame), b.score(frame)
    assert np.array_equal(x.probabilities, y.probabilities) and np.array_equal(x.score, y.score)
    assert x.lookup == y.lookup


def _users_whole(scorer: Scorer, model_path: Path, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    """(snapshot user rows, ``tensor``'s values for them): the registered graph with ``tensor`` as an
    extra output, run on candidates of every snapshot user at the scorer's rows per call."""
    proto = onnx.load(str(model_path))
    proto.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=PROVIDERS)
    users = scorer.features.users
    assert users is not None
    rows = scorer.features.encode(scorer.features.probe(len(users.keys)))
    assert rows.user_rows is not None and sorted(rows.user_rows.tolist()) == list(range(len(users.keys)))
    values = [
        session.run([tensor], {n: a[s : s + PREDICT_ROWS] for n, a in rows.arrays.items()})[0]
        for s in range(0, rows.rows, PREDICT_ROWS)
    ]
    return rows.user_rows, np.concatenate(values)


def test_the_scorer_computes_the_first_layers_user_part_once_per_user(scorer: Scorer, model_path: Path) -> None:
    """The table has a row per snapshot user: the bits the whole graph computes for that user's
    candidates (probe candidates: other items, timestamps and context values)."""
    assert load_onnx(model_path).user_tensors == (USER_FIRST_LAYER_TENSOR, USER_SEQUENCE_TENSOR)
    part, users = scorer.user_part, scorer.features.users
    assert part is not None and users is not None and part.tensor == USER_FIRST_LAYER_TENSOR
    assert part.table.shape[0] == len(users.keys) and part.table.dtype == np.float32
    rows, whole = _users_whole(scorer, model_path, USER_FIRST_LAYER_TENSOR)
    assert np.array_equal(part.table[rows], whole)


def test_the_pooled_histories_are_the_next_choice(scorer: Scorer, model_path: Path, candidates: pl.DataFrame) -> None:
    histories = _with(scorer, USER_SEQUENCE_TENSOR)
    part, users = histories.user_part, scorer.features.users
    assert part is not None and users is not None and part.table.shape == (len(users.keys), 2 * 4)  # 2 x dim 4
    rows, whole = _users_whole(scorer, model_path, USER_SEQUENCE_TENSOR)
    assert np.array_equal(part.table[rows], whole)
    empty = (users.arrays["sequence_lengths"] == 0).all(axis=1)
    assert 0 < empty.sum() < len(empty), "the sample has users with and without histories"
    assert not part.table[empty].any() and part.table[~empty].any(axis=1).all()
    _same_scores(histories, _with(scorer), candidates)


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
    whole = _with(scorer)
    assert whole.user_part is None
    _same_scores(scorer, whole, frame)  # known users, a third of them with an empty history
    unknown = frame.with_columns(
        pl.when(pl.int_range(n) % 7 == 0).then(pl.col("user_id") + 10**9).otherwise(pl.col("user_id")).alias("user_id")
    )
    _same_scores(scorer, whole, unknown)  # with unknown users: the user part runs on their rows
    assert scorer.score(unknown).lookup.missing_rows["user"] == len(range(0, n, 7))
    big = pl.concat([frame] * (SCORE_BLOCK_ROWS // n + 1))
    _same_scores(scorer, whole, big)  # more than one block
    _same_scores(scorer, whole, frame.head(1))  # one candidate, as an online request of one


class _CountingSession:
    """An onnxruntime session that records how many rows each call gets."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.rows = session, list[int]()

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.rows.append(int(next(iter(feed.values())).shape[0]))
        return self.session.run(outputs, feed)


def _unknown(frame: pl.DataFrame, column: str, every: int) -> pl.DataFrame:
    """``frame`` with every ``every``-th ``column`` id shifted past the snapshot's keys (no snapshot row)."""
    shifted = pl.when(pl.int_range(frame.height) % every == 0).then(pl.col(column) + 10**9).otherwise(pl.col(column))
    return frame.with_columns(shifted.cast(frame[column].dtype).alias(column))


@pytest.mark.parametrize("tensor", [USER_FIRST_LAYER_TENSOR, USER_SEQUENCE_TENSOR])
def test_blocks_with_unknown_users_or_items_use_the_table(
    scorer: Scorer, candidates: pl.DataFrame, tensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known and unknown users mixed (one block and several), known users with unknown items, only
    unknown users, one candidate as an online request of one (``Scorer.score``, as the server):
    the whole graph's bits, while the whole graph never runs and the user part runs on just the
    unknown users' rows."""
    whole = _with(scorer)
    mixed = _unknown(candidates, "user_id", 7)
    frames = {
        "mixed": mixed,
        "mixed, several blocks": pl.concat([mixed] * (SCORE_BLOCK_ROWS // mixed.height + 1)),
        "unknown items": _unknown(candidates, "item_id", 5),
        "only unknown users": _unknown(candidates, "user_id", 1),
        "one unknown user": _unknown(candidates.head(1), "user_id", 1),
    }
    expected = {name: whole.score(frame) for name, frame in frames.items()}
    fast = _with(scorer, tensor)
    assert fast.user_part is not None and fast.user_part.tensor == tensor
    counting = _CountingSession(fast.user_part.user)
    fast.user_part = dataclasses.replace(fast.user_part, user=counting)  # type: ignore[arg-type]

    def whole_graph(self: OnnxModel, inputs: object) -> np.ndarray:
        raise AssertionError("the whole graph ran")

    monkeypatch.setattr(OnnxModel, "predict", whole_graph)
    for name, frame in frames.items():
        counting.rows.clear()
        got, want = fast.score(frame), expected[name]
        assert np.array_equal(got.probabilities, want.probabilities), name
        assert np.array_equal(got.score, want.score) and got.lookup == want.lookup, name
        unknown_users = got.lookup.missing_rows["user"]
        assert sum(counting.rows) == unknown_users and max(counting.rows, default=0) <= PREDICT_ROWS, name
    assert expected["mixed"].lookup.missing_rows["user"] == len(range(0, candidates.height, 7))
    items = expected["unknown items"].lookup.missing_rows
    assert items["user"] == 0 and items["item"] == len(range(0, candidates.height, 5))
    assert expected["only unknown users"].lookup.missing_rows["user"] == candidates.height


def test_the_lookup_skips_the_history_arrays_on_that_path(scorer: Scorer, candidates: pl.DataFrame) -> None:
    (lean,) = scorer.features.encode_blocks(candidates, SCORE_BLOCK_ROWS, sequences=False)
    (full,) = scorer.features.encode_blocks(candidates, SCORE_BLOCK_ROWS)
    assert set(full.arrays) - set(lean.arrays) == set(SEQUENCE_INPUTS)
    assert all(np.array_equal(lean.arrays[k], full.arrays[k]) for k in lean.arrays)
    assert lean.user_rows is not None and full.user_rows is not None
    assert np.array_equal(lean.user_rows, full.user_rows)
    assert np.array_equal(scorer.features.users.keys[lean.user_rows], candidates["user_id"].to_numpy())  # type: ignore[union-attr]
    assert lean.slice(5, 9).user_rows.tolist() == lean.user_rows[5:9].tolist()  # type: ignore[union-attr]


def test_the_next_tensor_or_the_whole_graph_otherwise(
    scorer: Scorer,
    model_path: Path,
    etl_dir: Path,
    candidates: pl.DataFrame,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An old export (no metadata), tables above the size bound, a tensor that does not separate the
    user's inputs: the next tensor or the whole graph, the same scores, the reasons logged."""
    old = load_scorer(with_metadata(model_path, tmp_path / "old.onnx", **{META_USER_TENSORS: None}), etl_dir)
    assert old.model.user_tensors == () and old.user_part is None
    _same_scores(scorer, Scorer(old.model, old.features, WEIGHTS), candidates)
    users = len(scorer.features.users.keys)  # type: ignore[union-attr]
    nodes = onnx.load(str(model_path)).graph.node
    producer = {o: n for n in nodes for o in n.output}
    # inside the history branch (the pooled sum before its division by the lengths): the rest would
    # read the lengths; after the user part (its sum with the item side's): it reads item columns
    inside = producer[producer[USER_SEQUENCE_TENSOR].input[0]].input[0]
    (mixed,) = [n.output[0] for n in nodes if USER_FIRST_LAYER_TENSOR in n.input and n.op_type == "Add"]
    odd_path = with_metadata(model_path, tmp_path / "odd.onnx", **{META_USER_TENSORS: f'["{inside}", "{mixed}"]'})
    with caplog.at_level(logging.WARNING, logger="aptrank.serve"):
        histories = _with(scorer, *scorer.model.user_tensors, max_bytes=users * 2 * 4 * 4)
        capped = _with(scorer, *scorer.model.user_tensors, max_bytes=1024)
        odd = load_scorer(odd_path, etl_dir)
    assert histories.user_part is not None and histories.user_part.tensor == USER_SEQUENCE_TENSOR
    assert capped.user_part is None and odd.user_part is None
    assert f"'{USER_FIRST_LAYER_TENSOR}' of {users} users would take" in caplog.text
    assert f"'{USER_SEQUENCE_TENSOR}' of {users} users would take 0.8 MiB, above 0.0 MiB" in caplog.text
    assert f"does not split at '{inside}'" in caplog.text and "the rest also reads ['sequence_lengths']" in caplog.text
    assert f"'{mixed}' once per user scores probe rows differently" in caplog.text
    assert "running the whole graph for every candidate" in caplog.text
    for other in (histories, capped, Scorer(odd.model, odd.features, WEIGHTS)):
        _same_scores(scorer, other, candidates)


def test_the_bound_is_read_from_the_environment_unless_given(
    scorer: Scorer, candidates: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``APTRANK_USER_TABLE_MAX_BYTES`` reaches every scorer of the process (the pyfunc and Spark
    executors too, which no flag reaches); an explicit ``user_table_max_bytes`` wins."""
    from aptrank.errors import ConfigError
    from aptrank.serving.user_precompute import USER_TABLE_MAX_BYTES, configured_max_bytes

    assert configured_max_bytes({}) == USER_TABLE_MAX_BYTES == 16 * 2**30
    assert configured_max_bytes({"APTRANK_USER_TABLE_MAX_BYTES": " 0 "}) == 0
    assert configured_max_bytes({"APTRANK_USER_TABLE_MAX_BYTES": "4096"}) == 4096
    for bad in ("4GiB", "-2", "1e9"):
        with pytest.raises(ConfigError, match="APTRANK_USER_TABLE_MAX_BYTES: expected a whole number"):
            configured_max_bytes({"APTRANK_USER_TABLE_MAX_BYTES": bad})
    assert scorer.user_part is not None  # the default bound holds the tiny model's table
    monkeypatch.setenv("APTRANK_USER_TABLE_MAX_BYTES", "1024")
    capped = Scorer(scorer.model, scorer.features, WEIGHTS)
    assert capped.user_part is None
    _same_scores(capped, scorer, candidates)  # the whole graph: the same bits
    assert Scorer(scorer.model, scorer.features, WEIGHTS, user_table_max_bytes=USER_TABLE_MAX_BYTES).user_part
