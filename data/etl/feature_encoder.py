"""Raw example columns -> the encoded feature columns of a FeatureSpec: the one encoding path.

Both the ETL (examples) and the scorers' feature lookup (:mod:`data.snapshot`) build a *raw frame*
(keys, ts, context, side attributes, point-in-time counts, encoded history lists) and call
:meth:`FeatureEncoder.encode`; the online scorer's request-time features call
:meth:`FeatureEncoder.encode_numpy`, which evaluates the same typed encodings
(:mod:`data.encodings`) with their numpy functions.

Output columns, in this order: ``user_id``, ``item_id``, ``ts`` (raw, for GAUC and baselines), then
one column per FeatureSpec feature named as in the spec (categorical: an index of
:func:`index_dtype`; sequence: a list of such ids, at most ``max_len``, most recent first, as the
raw frame holds them: history lists are encoded and cut to ``max_len`` when built; dense: Float32,
normalised), then ``label_<task>`` (Int8) for every task whose label column the raw frame has.
``data.tensors.model_inputs`` widens indices to int64 for the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.data.encodings import Column, NotVectorised, derived_columns
from aptrank.data.encodings.dense import normalised_expr, normalised_numpy
from aptrank.data.etl.labels import label_column
from aptrank.data.spec import FeatureSpec, SpecError

RAW_KEYS: tuple[str, ...] = ("user_id", "item_id", "ts")


def index_dtype(num_embeddings: int) -> pl.DataType:
    """Int32 for indices of tables up to 2**31 rows (all real vocabularies and hash spaces), Int64
    beyond. Measured on 10M generated events: Int32 example columns take about a sixth off the bytes
    the Parquet writer encodes, and the examples stage is writer-bound (``bench/etl.py``)."""
    return pl.Int32() if num_embeddings <= 2**31 else pl.Int64()


class FeatureEncoder:
    """Encodes raw frames for one FeatureSpec; vocabularies under ``base_dir`` are loaded once."""

    def __init__(self, spec: FeatureSpec, base_dir: str | Path) -> None:
        self.spec = spec
        base = Path(base_dir)
        missing = [f.name for f in (*spec.categorical, *spec.sequence) if f.encoding is None]
        missing += [d.name for d in spec.dense if d.recipe is None]
        if missing:
            raise SpecError(f"FeatureSpec has no encoding or dense recipe for {missing}: not written by aptrank etl")
        self.categorical = tuple((f, f.encoding.load(base)) for f in spec.categorical)  # type: ignore[union-attr]
        try:
            self.time_zone = str(spec.extras["time_zone"])
            self.derived = derived_columns(spec.extras.get("derived", []), self.time_zone)
        except KeyError as e:
            raise SpecError(f"FeatureSpec extras lack {e}: not written by aptrank etl") from e
        self.vectorised = not spec.sequence and all(enc.vectorised for _, enc in self.categorical)
        """Whether :meth:`encode_numpy` handles this spec: no sequence feature and every categorical
        encoding has a numpy path (integer vocabularies and hashes, ranges, buckets)."""

    @property
    def derived_names(self) -> list[str]:
        return [d.name for d in self.derived]

    def required_columns(self) -> list[str]:
        """Raw columns the encoder reads (besides derived ones)."""
        cols: list[str] = list(RAW_KEYS)
        cols += [enc.source for _, enc in self.categorical]
        cols += [f.encoding.source for f in self.spec.sequence]  # type: ignore[union-attr]
        for d in self.spec.dense:
            cols += d.recipe.columns  # type: ignore[union-attr]
        for derived in self.derived:
            cols += derived.inputs
        names = set(self.derived_names)
        return [c for c in dict.fromkeys(cols) if c not in names]

    def feature_exprs(self) -> list[pl.Expr]:
        """Encoded feature expressions in FeatureSpec order (categorical, sequence, dense)."""
        out = [
            enc.polars_expr(pl.col(enc.source)).cast(index_dtype(f.num_embeddings)).alias(f.name)
            for f, enc in self.categorical
        ]
        for f in self.spec.sequence:  # raw lists are already encoded and cut to max_len by data.etl.history
            seq = f.encoding
            out.append(seq.polars_expr(pl.col(seq.source), index_dtype(f.num_embeddings)).alias(f.name))  # type: ignore[union-attr]
        out += [
            normalised_expr(d.recipe.polars_expr(), d.mean, d.std, d.fill).alias(d.name)  # type: ignore[union-attr]
            for d in self.spec.dense
        ]
        return out

    def derived_exprs(self) -> list[pl.Expr]:
        """The spec's derived columns (``hour``, ``weekday``, ``item_age_days``) from ``ts``."""
        return [d.polars_expr() for d in self.derived]

    def encode(self, raw: pl.LazyFrame, with_labels: bool = True, passthrough: Sequence[str] = ()) -> pl.LazyFrame:
        """Raw frame -> example layout (see module docstring); ``passthrough`` columns are appended."""
        have = raw.collect_schema()
        missing = [c for c in self.required_columns() if c not in have]
        if missing:
            raise SpecError(f"raw feature frame lacks columns {missing} that the FeatureSpec needs")
        labels = [label_column(t) for t in self.spec.task_names if label_column(t) in have] if with_labels else []
        return raw.with_columns(self.derived_exprs()).select(
            *RAW_KEYS, *self.feature_exprs(), *[pl.col(c).cast(pl.Int8) for c in labels], *passthrough
        )

    # ---- numpy (request-time features) ----------------------------------------------------------
    def encode_numpy(self, columns: Mapping[str, Column], rows: int) -> dict[str, np.ndarray]:
        """``categorical`` int64 [rows, C] and ``dense`` float32 [rows, D] from the raw ``columns``
        (``ts`` as epoch ms and what :meth:`required_columns` lists but the keys): the values
        :meth:`encode` gives, widened like :func:`data.tensors.model_inputs`."""
        if not self.vectorised:
            raise NotVectorised("FeatureSpec has sequence features or encodings without a numpy path")
        raw = dict(columns)
        for derived in self.derived:
            raw[derived.name] = derived.numpy(raw)
        categorical = np.empty((rows, len(self.categorical)), np.int64)
        for j, (_, enc) in enumerate(self.categorical):
            categorical[:, j] = enc.numpy(raw[enc.source])
        dense = np.empty((rows, len(self.spec.dense)), np.float32)
        for j, d in enumerate(self.spec.dense):
            dense[:, j] = normalised_numpy(d.recipe.numpy(raw), d.mean, d.std, d.fill)  # type: ignore[union-attr]
        return {"categorical": categorical, "dense": dense}


__all__ = ["RAW_KEYS", "FeatureEncoder", "index_dtype"]
