"""Categorical encodings, stable hashes and dense statistics against reference values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aptrank.data.encodings import Buckets, Hashed, Log1pCount, Range, SmoothedRate, Value, Vocab
from aptrank.data.encodings.dense import normalised_expr
from aptrank.data.encodings.hashing import fnv1a_strings, splitmix64
from aptrank.data.etl import dense
from aptrank.data.etl.config import OutputConfig
from aptrank.data.etl.vocab import build_vocab, vocab_encoding
from aptrank.data.spec import SpecError


def test_fnv1a_reference_vectors() -> None:
    # FNV-1a 64 test vectors (draft-eastlake-fnv): "" -> offset basis, "a", "foobar"
    got = fnv1a_strings(pl.Series(["", "a", "foobar", None])).to_list()
    assert got == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8, None]


def test_splitmix64_reference_values() -> None:
    # first two outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c): mix(gamma), mix(2 gamma)
    out = pl.DataFrame({"x": [0, 0x9E3779B97F4A7C15 - (1 << 64)]}).select(splitmix64(pl.col("x")))["x"].to_list()
    assert out == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_hash_encoding_range_and_nulls() -> None:
    enc = Hashed("u", "Int64", buckets=11)
    frame = pl.DataFrame({"u": [0, 1, 2, None, 10**12]})
    got = frame.select(enc.polars_expr(pl.col("u")))["u"].to_list()
    assert got[3] == 0 and all(1 <= g <= 10 for i, g in enumerate(got) if i != 3)
    mixed = pl.DataFrame({"x": [0, 1, 2, 10**12]}).select(splitmix64(pl.col("x")))["x"].to_list()
    assert [g for i, g in enumerate(got) if i != 3] == [1 + m % 10 for m in mixed]
    strings = Hashed("s", "String", buckets=7)
    got = pl.DataFrame({"s": ["a", "foobar"]}).select(strings.polars_expr(pl.col("s")))["s"].to_list()
    assert got == [1 + 0xAF63DC4C8601EC8C % 6, 1 + 0x85944171F73967E8 % 6]


def test_vocab_most_frequent_first_min_count_and_oov(tmp_path: Path) -> None:
    values = pl.DataFrame({"c": ["b", "a", "b", None, "c", "a", "b", "d"]}).lazy()
    vocab = build_vocab(values, "c", min_count=2).collect()
    assert vocab.rows() == [("b", 1, 3), ("a", 2, 2)]
    assert build_vocab(values, "c", 1).collect()["value"].to_list() == ["b", "a", "c", "d"]  # ties by value
    inline = vocab_encoding("c", "c", vocab, tmp_path, inline_max=2, output=OutputConfig())
    assert inline.to_dict() == {"kind": "vocab", "source": "c", "dtype": "String", "size": 2, "values": ["b", "a"]}
    stored = vocab_encoding("c", "c", vocab, tmp_path, inline_max=1, output=OutputConfig())
    assert stored.file == "vocab/c.parquet" and stored.num_embeddings() == 3
    enc = Vocab("c", "String", 2, file="vocab/c.parquet").load(tmp_path)
    got = pl.DataFrame({"c": ["a", "b", "zzz", None]}).select(enc.polars_expr(pl.col("c")))["c"].to_list()
    assert got == [2, 1, 0, 0]
    with pytest.raises(SpecError, match="vocabulary must have indexes 1..5"):
        Vocab("c", "String", 5, file="vocab/c.parquet").load(tmp_path)
    with pytest.raises(SpecError, match="vocab/c.parquet of 'c' is not loaded"):
        Vocab("c", "String", 2, file="vocab/c.parquet").polars_expr(pl.col("c"))


def test_range_and_bucket_encodings() -> None:
    hour = Range("h", low=0, high=23)
    got = pl.DataFrame({"h": [0, 23, 24, -1, None]}).select(hour.polars_expr(pl.col("h")))["h"].to_list()
    assert got == [1, 24, 0, 0, 0]
    enc = Buckets("d", boundaries=(1000, 5000))
    frame = pl.DataFrame({"d": [0, 999, 1000, 4999, 5000, 10**9, -1, None]})
    got = frame.select(enc.polars_expr(pl.col("d")).alias("x"))
    assert got["x"].to_list() == [1, 1, 2, 2, 3, 3, 0, 0]
    assert enc.num_embeddings() == 4 and Range("w", low=1, high=7).num_embeddings() == 8


def test_dense_recipes() -> None:
    frame = pl.DataFrame({"n": [0, 3], "p": [0, 1], "v": [-2.0, 3.0]})
    rate = SmoothedRate("p", "n", prior=0.25, smoothing=4.0)
    assert frame.select(rate.polars_expr())["p"].to_list() == [0.25, (1 + 1.0) / 7]
    assert frame.select(Log1pCount("n").polars_expr())["n"].to_list() == [0.0, np.log1p(3)]
    assert frame.select(Value("v", log1p=True).polars_expr())["v"].to_list() == [0.0, np.log1p(3.0)]
    got = pl.DataFrame({"v": [5.0, None, float("nan")]}).select(
        normalised_expr(Value("v").polars_expr(), mean=1.0, std=2.0, fill=0.5).alias("x")
    )
    assert got["x"].to_list() == [2.0, 0.5, 0.5] and got["x"].dtype == pl.Float32


def test_fit_merges_chunks_like_one_pass() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000) * 5 + 100
    chunks = [pl.DataFrame({"v": x[a:b]}) for a, b in ((0, 1), (1, 400), (400, 401), (401, 1000))]
    stats = dense.fit(chunks, {"v": Value("v"), "c": Value("v", log1p=True)})
    assert stats["v"] == pytest.approx((x.mean(), x.std()), rel=1e-9)
    assert stats["c"] == pytest.approx((np.log1p(x).mean(), np.log1p(x).std()), rel=1e-9)
    const = dense.fit([pl.DataFrame({"v": [2.0, 2.0, None]})], {"v": Value("v")})
    assert const["v"] == (2.0, 1.0), "constant feature: std 1 (FeatureSpec needs std > 0)"
    empty = pl.DataFrame({"v": [None]}, schema={"v": pl.Float64})
    assert dense.fit([empty], {"v": Value("v")})["v"] == (0.0, 1.0)


def test_integer_vocab_lookup_table_matches_hash_map(tmp_path: Path) -> None:
    """Compact non-negative integer vocabularies use a lookup table, others a hash map; same indexes."""
    values = pl.DataFrame({"v": [5, 3, 5, 1000, 3, 5]}).lazy()
    dense_ids = vocab_encoding("v", "v", build_vocab(values, "v", 1).collect(), tmp_path, 0, OutputConfig())
    sparse = pl.DataFrame({"v": [5 + 2**40, 3 + 2**40, 5 + 2**40, 1000 + 2**40, 3 + 2**40, 5 + 2**40]}).lazy()
    sparse_ids = vocab_encoding("w", "v", build_vocab(sparse, "v", 1).collect(), tmp_path, 0, OutputConfig())
    table, hashed = dense_ids.load(tmp_path), sparse_ids.load(tmp_path)
    assert table.lookup.table is not None and hashed.lookup.table is None
    probe = [5, 3, 1000, 7, -1, None, 10**9]
    got = pl.DataFrame({"v": probe}).select(table.polars_expr(pl.col("v")))["v"].to_list()
    shifted = [None if p is None else p + 2**40 for p in probe]
    assert got == [1, 2, 3, 0, 0, 0, 0]
    assert pl.DataFrame({"v": shifted}).select(hashed.polars_expr(pl.col("v")))["v"].to_list() == [1, 2, 3, 0, 0, 0, 0]
