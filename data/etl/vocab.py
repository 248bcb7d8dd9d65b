"""Train-split vocabularies: the query that counts a column's values and the :class:`~data.encodings.Vocab`
encoding that stores the result (inline in the FeatureSpec when small, else ``vocab/<name>.parquet``).

Values seen at least ``min_count`` times in train, most frequent first (ties by value), get rows
1..size; nulls are never in a vocabulary (they encode to the OOV row 0).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aptrank.data.encodings import Vocab, dtype_name
from aptrank.data.etl.config import OutputConfig
from aptrank.data.etl.parts import write_frame

VOCAB_DIR = "vocab"


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
) -> Vocab:
    """The encoding of ``vocab`` (loaded); writes ``vocab/<name>.parquet`` unless it is small."""
    dtype = dtype_name(vocab.schema["value"])
    if vocab.height <= inline_max:
        return Vocab(source, dtype, vocab.height, values=tuple(vocab["value"].to_list()))
    rel = f"{VOCAB_DIR}/{name}.parquet"
    write_frame(vocab, out_dir / rel, output)
    return Vocab(source, dtype, vocab.height, file=rel).load(out_dir)
