"""Categorical encodings: a raw value -> an embedding row index (row 0 = OOV / unknown / null).

Each categorical or sequence feature's ``encoding`` in the FeatureSpec is one of:

* ``{"kind": "vocab", "source", "dtype", "size", "file"}`` or with ``"values"`` inline: the
  train-split vocabulary; values seen at least ``min_count`` times in train, most frequent first
  (ties by value), get rows 1..size. Stored as Parquet (``value``, ``index``, ``count``) under
  ``vocab/`` or inline when small.
* ``{"kind": "hash", "source", "dtype", "buckets"}``: row 1 + stable_hash(value) mod (buckets - 1)
  (hashing trick, Weinberger et al., ICML 2009) with the stable hashes of :mod:`data.etl.hashing`.
* ``{"kind": "range", "source", "low", "high"}``: integer v in [low, high] -> v - low + 1
  (hour of day, weekday).
* ``{"kind": "buckets", "source", "boundaries"}``: number v >= 0 -> 1 + #boundaries <= v
  (duration buckets); null or negative -> 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from aptrank.data.etl.config import OutputConfig
from aptrank.data.etl.hashing import stable_hash
from aptrank.data.etl.parts import write_frame
from aptrank.data.spec import OOV_INDEX, SpecError

VOCAB_DIR = "vocab"


def dtype_name(dtype: pl.DataType) -> str:
    return str(dtype)


def dtype_from_name(name: str) -> pl.DataType:
    dtypes = {
        "Int64": pl.Int64(),
        "Int32": pl.Int32(),
        "String": pl.String(),
        "Float64": pl.Float64(),
        "Int8": pl.Int8(),
        "Int16": pl.Int16(),
        "UInt32": pl.UInt32(),
        "Float32": pl.Float32(),
        "Boolean": pl.Boolean(),
    }
    if name not in dtypes:
        raise SpecError(f"encoding dtype '{name}' is not supported ({', '.join(dtypes)})")
    return dtypes[name]


def build_vocab(values: pl.LazyFrame, column: str, min_count: int) -> pl.LazyFrame:
    """Vocabulary query of ``column`` over ``values``: ``value``, ``index`` (Int64, from 1),
    ``count``. Nulls are never in a vocabulary (they encode to OOV)."""
    counts = (
        values.select(pl.col(column).alias("value"))
        .drop_nulls()
        .group_by("value")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .filter(pl.col("count") >= min_count)
        .sort(["count", "value"], descending=[True, False])
    )
    return counts.with_row_index("index", offset=1).select("value", pl.col("index").cast(pl.Int64), "count")


def vocab_encoding(
    name: str, source: str, vocab: pl.DataFrame, out_dir: Path, inline_max: int, output: OutputConfig
) -> dict[str, Any]:
    """The FeatureSpec encoding of ``vocab``; writes ``vocab/<name>.parquet`` unless it is small."""
    enc: dict[str, Any] = {
        "kind": "vocab",
        "source": source,
        "dtype": dtype_name(vocab.schema["value"]),
        "size": vocab.height,
    }
    if vocab.height <= inline_max:
        enc["values"] = vocab["value"].to_list()
    else:
        rel = f"{VOCAB_DIR}/{name}.parquet"
        write_frame(vocab, out_dir / rel, output)
        enc["file"] = rel
    return enc


def num_embeddings(enc: dict[str, Any]) -> int:
    """Rows of the embedding table an encoding needs (OOV row included)."""
    kind = enc["kind"]
    if kind == "vocab":
        return int(enc["size"]) + 1
    if kind == "hash":
        return int(enc["buckets"])
    if kind == "range":
        return int(enc["high"]) - int(enc["low"]) + 2
    if kind == "buckets":
        return len(enc["boundaries"]) + 2
    raise SpecError(f"unknown encoding kind '{kind}'")


def load_vocab(enc: dict[str, Any], base_dir: Path) -> pl.Series:
    """The vocabulary values in index order (index i+1 = values[i])."""
    dtype = dtype_from_name(enc["dtype"])
    if "values" in enc:
        return pl.Series("value", enc["values"], dtype=dtype)
    path = base_dir / enc["file"]
    if not path.is_file():
        raise SpecError(f"{path}: vocabulary file named by the FeatureSpec is missing")
    values = pl.read_parquet(path, columns=["value", "index"]).sort("index")
    expected = pl.Series(range(1, int(enc["size"]) + 1), dtype=pl.Int64)
    if values.height != int(enc["size"]) or not values["index"].cast(pl.Int64).equals(expected, check_names=False):
        raise SpecError(f"{path}: vocabulary must have indexes 1..{enc['size']} (FeatureSpec size)")
    return values["value"].cast(dtype)


class CategoricalEncoder:
    """Builds the index expression of one encoding; vocabularies are loaded once.

    A vocabulary of non-negative integers with a compact range (max < 4 x size + 2^20) is applied
    through a dense lookup table (one array read per value) instead of a hash map built per call:
    same result, ~8x less CPU for id columns."""

    def __init__(self, enc: dict[str, Any], base_dir: Path) -> None:
        self.enc = enc
        self.vocab = load_vocab(enc, base_dir) if enc["kind"] == "vocab" else None
        self.table: np.ndarray | None = None
        v = self.vocab
        if v is not None and v.dtype.is_integer() and len(v) and v.min() >= 0 and v.max() < 4 * len(v) + (1 << 20):
            self.table = np.zeros(int(v.max()) + 1, dtype=np.int64)
            self.table[v.to_numpy()] = np.arange(1, len(v) + 1)

    def _lookup(self, values: pl.Series) -> pl.Series:
        assert self.table is not None
        raw = values.fill_null(-1).to_numpy()
        inside = (raw >= 0) & (raw < len(self.table))
        return pl.Series(values.name, np.where(inside, self.table[np.where(inside, raw, 0)], OOV_INDEX))

    def expr(self, value: pl.Expr) -> pl.Expr:
        """Int64 index of ``value`` (OOV_INDEX for null and unseen values)."""
        enc, kind = self.enc, self.enc["kind"]
        if kind == "vocab" and self.table is not None:
            ints = value.cast(pl.Int64, strict=False)
            out = ints.map_batches(self._lookup, return_dtype=pl.Int64, is_elementwise=True)
        elif kind == "vocab":
            assert self.vocab is not None
            old = self.vocab
            new = pl.Series("index", range(1, len(old) + 1), dtype=pl.Int64)
            out = value.cast(old.dtype, strict=False).replace_strict(old, new, default=OOV_INDEX, return_dtype=pl.Int64)
        elif kind == "hash":
            dtype = dtype_from_name(enc["dtype"])
            h = stable_hash(value.cast(dtype, strict=False), dtype)
            out = (h % pl.lit(int(enc["buckets"]) - 1, dtype=pl.UInt64)).cast(pl.Int64) + 1
        elif kind == "range":
            low, high = int(enc["low"]), int(enc["high"])
            v = value.cast(pl.Int64, strict=False)
            out = pl.when((v >= low) & (v <= high)).then(v - low + 1).otherwise(OOV_INDEX)
        elif kind == "buckets":
            v = value.cast(pl.Float64, strict=False)
            above = [(v >= float(b)).cast(pl.Int64) for b in enc["boundaries"]]
            inside = pl.sum_horizontal([pl.lit(1, dtype=pl.Int64), *above])
            out = pl.when(v >= 0).then(inside).otherwise(OOV_INDEX)
        else:
            raise SpecError(f"unknown encoding kind '{kind}'")
        return out.fill_null(OOV_INDEX).cast(pl.Int64)
