"""Categorical encodings: a raw value -> an embedding row index (row 0 = OOV / unknown / null).

One class per kind, each with its Polars expression (ETL, scorers' lookup) and its numpy function
(request-time features); both give the same index for every input (``tests/data/test_encodings.py``):

* :class:`Vocab` (``vocab``): the train-split vocabulary; values seen at least ``min_count`` times
  in train, most frequent first (ties by value), get rows 1..size. Inline ``values`` when small,
  else a Parquet ``file`` (``value``, ``index``, ``count``) under the ETL output's ``vocab/``.
* :class:`Hashed` (``hash``): row 1 + stable_hash(value) mod (buckets - 1), the hashing trick
  (Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", ICML 2009) with the
  stable hashes of :mod:`data.encodings.hashing`.
* :class:`Range` (``range``): integer v in [low, high] -> v - low + 1 (hour of day, weekday).
* :class:`Buckets` (``buckets``): number v >= 0 -> 1 + #(boundaries <= v) (duration buckets); null or
  negative -> 0 (NaN is above every boundary, as Polars orders it).

Sequence features have their own kind, :class:`data.encodings.sequence.ItemHistory`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from aptrank.data.encodings.base import (
    OOV_INDEX,
    Column,
    NotVectorised,
    Registry,
    Serialisable,
    SpecError,
    dtype_from_name,
    in_range,
    integer_bounds,
)
from aptrank.data.encodings.hashing import splitmix64_numpy, stable_hash

DENSE_TABLE_SLACK = 1 << 20
"""An integer vocabulary with max < 4 x size + this is looked up through a dense table."""


class Encoding(Serialisable):
    """Base of the categorical encodings: Int64 index of one raw column ``source``."""

    source: str

    def num_embeddings(self) -> int:
        """Rows of the embedding table the encoding needs (OOV row included)."""
        raise NotImplementedError

    @property
    def vectorised(self) -> bool:
        """Whether :meth:`numpy` handles this encoding (numeric inputs)."""
        return True

    def load(self, base_dir: Path) -> Self:
        """The encoding with what it reads from the ETL output loaded (vocabulary files)."""
        return self

    def probe_values(self) -> list[Any]:
        """Raw values worth checking the encoding on (known values, range ends +- 1)."""
        return []

    def polars_expr(self, value: pl.Expr) -> pl.Expr:
        """Int64 index of ``value`` (OOV_INDEX for null and unseen values)."""
        return self._polars(value).fill_null(OOV_INDEX).cast(pl.Int64)

    def numpy(self, column: Column) -> np.ndarray:
        """int64 index of each value of ``column``, equal to :meth:`polars_expr`; raises
        :class:`NotVectorised` where :attr:`vectorised` is False."""
        raise NotImplementedError

    def _polars(self, value: pl.Expr) -> pl.Expr:
        raise NotImplementedError

    def _refuse(self) -> NotVectorised:
        return NotVectorised(f"{self.kind} encoding of '{self.source}' has no numpy path")


@dataclass(frozen=True)
class VocabLookup:
    """A loaded vocabulary: values in index order; for an integer vocabulary, the dense id -> index
    table when it is compact and non-negative (one array read per value, ~8x less CPU than a hash
    map), else the values sorted for binary search."""

    values: pl.Series
    table: np.ndarray | None = None
    sorted_values: np.ndarray | None = None
    sorted_index: np.ndarray | None = None

    @classmethod
    def of(cls, values: pl.Series) -> VocabLookup:
        v = values
        if not v.dtype.is_integer() or not len(v):
            return cls(values)
        if v.min() >= 0 and v.max() < 4 * len(v) + DENSE_TABLE_SLACK:
            table = np.zeros(int(v.max()) + 1, dtype=np.int64)
            table[v.to_numpy()] = np.arange(1, len(v) + 1)
            return cls(values, table=table)
        known = v.cast(pl.Int64).to_numpy()
        order = np.argsort(known, kind="stable")
        return cls(values, sorted_values=known[order], sorted_index=order + 1)

    def lookup(self, ids: Column) -> np.ndarray:
        """Index of int64 ``ids`` (OOV for null, negative and unseen ids)."""
        v = ids.values
        if self.table is not None:
            inside = ids.mask((v >= 0) & (v < len(self.table)))
            return np.where(inside, self.table[np.where(inside, v, 0)], OOV_INDEX)
        if self.sorted_values is None or self.sorted_index is None:  # an empty vocabulary
            return np.full(len(v), OOV_INDEX, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_values, v), len(self.sorted_values) - 1)
        return np.where(ids.mask(self.sorted_values[pos] == v), self.sorted_index[pos], OOV_INDEX)


@dataclass(frozen=True)
class Vocab(Encoding):
    """Train-split vocabulary of ``size`` values (inline ``values`` or a Parquet ``file``)."""

    kind: ClassVar[str] = "vocab"
    source: str
    dtype: str
    size: int
    values: tuple[Any, ...] | None = None
    file: str | None = None
    loaded: VocabLookup | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.values is None) == (self.file is None):
            raise SpecError(f"vocab encoding of '{self.source}' needs exactly one of 'values' and 'file'")
        if self.values is not None:
            values = pl.Series("value", list(self.values), dtype=dtype_from_name(self.dtype))
            object.__setattr__(self, "loaded", VocabLookup.of(values))

    def num_embeddings(self) -> int:
        return int(self.size) + 1

    @cached_property
    def vectorised(self) -> bool:
        return dtype_from_name(self.dtype).is_integer()

    @cached_property
    def bounds(self) -> tuple[int, int] | None:
        """Range of the integer ``dtype`` the Polars path casts to (None: Int64)."""
        return integer_bounds(dtype_from_name(self.dtype))

    def probe_values(self) -> list[Any]:
        return list(self.values or ())

    def load(self, base_dir: Path) -> Self:
        if self.loaded is not None:
            return self
        path = base_dir / str(self.file)
        if not path.is_file():
            raise SpecError(f"{path}: vocabulary file named by the FeatureSpec is missing")
        frame = pl.read_parquet(path, columns=["value", "index"]).sort("index")
        expected = pl.Series(range(1, int(self.size) + 1), dtype=pl.Int64)
        if frame.height != int(self.size) or not frame["index"].cast(pl.Int64).equals(expected, check_names=False):
            raise SpecError(f"{path}: vocabulary must have indexes 1..{self.size} (FeatureSpec size)")
        out = dataclasses.replace(self)
        object.__setattr__(out, "loaded", VocabLookup.of(frame["value"].cast(dtype_from_name(self.dtype))))
        return out

    @property
    def lookup(self) -> VocabLookup:
        if self.loaded is None:
            raise SpecError(f"vocabulary {self.file} of '{self.source}' is not loaded (Vocab.load(etl_dir))")
        return self.loaded

    def _polars(self, value: pl.Expr) -> pl.Expr:
        lookup = self.lookup
        if lookup.table is not None:
            return value.cast(pl.Int64, strict=False).map_batches(
                self._lookup_series, return_dtype=pl.Int64, is_elementwise=True
            )
        old = lookup.values
        new = pl.Series("index", range(1, len(old) + 1), dtype=pl.Int64)
        return value.cast(old.dtype, strict=False).replace_strict(old, new, default=OOV_INDEX, return_dtype=pl.Int64)

    def _lookup_series(self, values: pl.Series) -> pl.Series:
        column = Column(values.fill_null(-1).to_numpy())
        return pl.Series(values.name, self.lookup.lookup(column))

    def numpy(self, column: Column) -> np.ndarray:
        if not self.vectorised:
            raise self._refuse()
        return self.lookup.lookup(in_range(column.as_int64(), self.bounds))


@dataclass(frozen=True)
class Hashed(Encoding):
    """The hashing trick (Weinberger et al., ICML 2009) into ``buckets`` rows, row 0 kept for null."""

    kind: ClassVar[str] = "hash"
    source: str
    dtype: str
    buckets: int

    def num_embeddings(self) -> int:
        return int(self.buckets)

    @cached_property
    def vectorised(self) -> bool:
        return dtype_from_name(self.dtype).is_integer()

    @cached_property
    def bounds(self) -> tuple[int, int] | None:
        """Range of the integer ``dtype`` the Polars path casts to (None: Int64)."""
        return integer_bounds(dtype_from_name(self.dtype))

    def _polars(self, value: pl.Expr) -> pl.Expr:
        dtype = dtype_from_name(self.dtype)
        h = stable_hash(value.cast(dtype, strict=False), dtype)
        return (h % pl.lit(int(self.buckets) - 1, dtype=pl.UInt64)).cast(pl.Int64) + 1

    def numpy(self, column: Column) -> np.ndarray:
        if not self.vectorised:
            raise self._refuse()
        ids = in_range(column.as_int64(), self.bounds)
        h = splitmix64_numpy(ids.values) % np.uint64(int(self.buckets) - 1)
        return np.where(ids.mask(np.ones(len(ids), bool)), h.astype(np.int64) + 1, OOV_INDEX)


@dataclass(frozen=True)
class Range(Encoding):
    """Integers ``low..high`` -> rows 1..high-low+1 (hour of day, weekday)."""

    kind: ClassVar[str] = "range"
    source: str
    low: int
    high: int

    def num_embeddings(self) -> int:
        return int(self.high) - int(self.low) + 2

    def probe_values(self) -> list[Any]:
        return list(range(int(self.low) - 1, int(self.high) + 2))

    def _polars(self, value: pl.Expr) -> pl.Expr:
        low, high = int(self.low), int(self.high)
        v = value.cast(pl.Int64, strict=False)
        return pl.when((v >= low) & (v <= high)).then(v - low + 1).otherwise(OOV_INDEX)

    def numpy(self, column: Column) -> np.ndarray:
        low, v = self.low, column.as_int64()
        values = v.values
        return np.where(v.mask((values >= low) & (values <= self.high)), values - low + 1, OOV_INDEX)


@dataclass(frozen=True)
class Buckets(Encoding):
    """Non-negative numbers cut at ``boundaries`` (item duration)."""

    kind: ClassVar[str] = "buckets"
    source: str
    boundaries: tuple[float, ...]

    def num_embeddings(self) -> int:
        return len(self.boundaries) + 2

    def _polars(self, value: pl.Expr) -> pl.Expr:
        v = value.cast(pl.Float64, strict=False)
        above = [(v >= float(b)).cast(pl.Int64) for b in self.boundaries]
        inside = pl.sum_horizontal([pl.lit(1, dtype=pl.Int64), *above])
        return pl.when(v >= 0).then(inside).otherwise(OOV_INDEX)

    def numpy(self, column: Column) -> np.ndarray:
        v = column.as_float64()
        nan = np.isnan(v.values)  # Polars orders NaN above every number
        bounds = np.asarray(self.boundaries, dtype=np.float64)
        inside = 1 + ((v.values[:, None] >= bounds[None, :]) | nan[:, None]).sum(axis=1)
        return np.where(v.mask((v.values >= 0) | nan), inside, OOV_INDEX)


CATEGORICAL: Registry[Encoding] = Registry("categorical encoding", Vocab, Hashed, Range, Buckets)

__all__ = ["CATEGORICAL", "Buckets", "Encoding", "Hashed", "Range", "Vocab", "VocabLookup"]
