"""Encoded frames -> numpy model inputs: exact arrays on a small frame, Arrow inputs, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from aptrank.data.spec import CategoricalFeature, DenseFeature, FeatureSpec, SequenceFeature, SpecError, TaskLabel
from aptrank.data.tensors import labels, model_inputs

SPEC = FeatureSpec(
    tasks=(TaskLabel("click", "binary_column", column="click"), TaskLabel("finish", "watch_ratio", min_ratio=0.9)),
    categorical=(CategoricalFeature("user", "user", 5), CategoricalFeature("item", "item", 9)),
    sequence=(SequenceFeature("recent", "item", 9, 3), SequenceFeature("liked", "item", 9, 2)),
    dense=(DenseFeature("a", 0.0, 1.0), DenseFeature("b", 0.0, 1.0)),
)


def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [1, 2, 0],
            "item": [3, 0, 8],
            "recent": [[5, 6, 7, 8], [], [1]],
            "liked": [[2], None, [4, 3, 9]],
            "a": pl.Series([0.5, -1.0, 2.0], dtype=pl.Float32),
            "b": pl.Series([1.5, 0.0, -3.0], dtype=pl.Float32),
            "label_click": pl.Series([1, 0, 1], dtype=pl.Int8),
            "label_finish": pl.Series([0, 0, 1], dtype=pl.Int8),
        },
        schema_overrides={"recent": pl.List(pl.Int64), "liked": pl.List(pl.Int64)},
    )


def test_exact_arrays() -> None:
    x = model_inputs(frame(), SPEC)
    assert list(x) == ["categorical", "sequence", "sequence_lengths", "dense"]
    np.testing.assert_array_equal(x["categorical"], [[1, 3], [2, 0], [0, 8]])
    assert x["categorical"].dtype == np.int64 and x["categorical"].flags["C_CONTIGUOUS"]
    # L = max max_len = 3; "recent" cut to 3, "liked" cut to 2 and 0-padded to 3; null list -> empty
    np.testing.assert_array_equal(
        x["sequence"], [[[5, 6, 7], [2, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 0, 0], [4, 3, 0]]]
    )
    np.testing.assert_array_equal(x["sequence_lengths"], [[3, 1], [0, 0], [1, 2]])
    np.testing.assert_array_equal(x["dense"], np.array([[0.5, 1.5], [-1.0, 0.0], [2.0, -3.0]], dtype=np.float32))
    assert x["dense"].dtype == np.float32
    y = labels(frame(), SPEC)
    assert y is not None and y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 0], [0, 0], [1, 1]])


def test_arrow_batches_and_slices_give_the_same_arrays() -> None:
    df = frame()
    full = model_inputs(df, SPEC)
    table = df.to_arrow()
    for batch in (table, table.to_batches()[0]):
        got = model_inputs(batch, SPEC)
        for k in full:
            np.testing.assert_array_equal(got[k], full[k])
    sliced = model_inputs(table.slice(1, 2), SPEC)
    for k in full:
        np.testing.assert_array_equal(sliced[k], full[k][1:])
    chunked = model_inputs(pl.concat([df.slice(0, 1), df.slice(1, 2)], rechunk=False), SPEC)
    for k in full:
        np.testing.assert_array_equal(chunked[k], full[k])


def test_large_batch_matches_reference() -> None:
    """40k rows (more than one internal row block) against a per-row Python reference."""
    rng = np.random.default_rng(0)
    n = 40_000
    lengths = rng.integers(0, 6, n)
    seqs = [list(rng.integers(1, 9, k)) for k in lengths]
    df = pl.DataFrame(
        {
            "user": rng.integers(0, 5, n),
            "item": rng.integers(0, 9, n),
            "recent": seqs,
            "liked": seqs,
            "a": rng.standard_normal(n).astype(np.float32),
            "b": rng.standard_normal(n).astype(np.float32),
        }
    )
    x = model_inputs(df, SPEC)
    for i in range(0, n, 997):
        want = [*seqs[i][:3], 0, 0, 0][:3]
        assert x["sequence"][i, 0].tolist() == want and x["sequence_lengths"][i].tolist() == [
            min(lengths[i], 3),
            min(lengths[i], 2),
        ]
        assert x["categorical"][i].tolist() == [df["user"][i], df["item"][i]]
        assert x["dense"][i].tolist() == [df["a"][i], df["b"][i]]
    assert labels(df, SPEC) is None


def test_errors_name_the_column() -> None:
    with pytest.raises(SpecError, match="lacks column 'b'"):
        model_inputs(frame().drop("b"), SPEC)
    with pytest.raises(SpecError, match=r"column 'user' has 1 nulls"):
        model_inputs(frame().with_columns(pl.Series("user", [1, None, 0])), SPEC)
    with pytest.raises(SpecError, match="sequence column 'recent' must be a list column"):
        model_inputs(frame().with_columns(pl.lit(1).alias("recent")), SPEC)
    with pytest.raises(SpecError, match=r"label columns \['label_click'\] but .* need"):
        labels(frame().drop("label_finish"), SPEC)
    with pytest.raises(TypeError, match="expected a Polars DataFrame"):
        model_inputs([1, 2], SPEC)  # type: ignore[arg-type]
