"""What every encoding shares: the OOV row, the spec error, numpy columns with Polars' cast rules,
value dtypes by name, and the kind registry used for (de)serialisation.

Each encoding kind is one frozen dataclass with a Polars expression (the ETL and the scorers' lookup)
and a vectorised numpy function (request-time features of the online scorer) that give the same
values; the FeatureSpec JSON names the kind under ``"kind"``, and :class:`Registry` is the only place
that reads that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import polars as pl

OOV_INDEX = 0
"""Embedding row of unseen, null and out-of-range values."""
INT64_LIMIT = 2.0**63


class SpecError(ValueError):
    """A FeatureSpec is malformed or does not match what a consumer expects."""


class NotVectorised(TypeError):
    """The numpy path does not handle this encoding or input (the caller uses the Polars path)."""


@dataclass(frozen=True)
class Column:
    """A raw column as numpy: int64 or float64 values and the valid mask (None: no nulls).
    Datetimes are epoch milliseconds."""

    values: np.ndarray
    valid: np.ndarray | None = None

    @classmethod
    def from_series(cls, series: pl.Series) -> Column | None:
        """A numeric, datetime or all-null Polars column; None for other dtypes (strings, lists)."""
        s, dtype = series, series.dtype  # isinstance: much cheaper than Polars' dtype equality
        if isinstance(dtype, pl.Null):
            return cls(np.zeros(len(s), np.int64), np.zeros(len(s), bool))
        if isinstance(dtype, pl.Datetime):
            s = s.dt.cast_time_unit("ms").to_physical()
            dtype = s.dtype
        if not (dtype.is_integer() or dtype.is_float()) or isinstance(dtype, pl.UInt64):
            return None  # UInt64 could exceed int64
        kind = np.float64 if dtype.is_float() else np.int64
        if not s.null_count():
            return cls(s.to_numpy().astype(kind, copy=False))
        return cls(s.fill_null(0).to_numpy().astype(kind, copy=False), s.is_not_null().to_numpy())

    def __len__(self) -> int:
        return len(self.values)

    def mask(self, ok: np.ndarray) -> np.ndarray:
        """``ok`` and valid."""
        return ok if self.valid is None else ok & self.valid

    @staticmethod
    def valid_of(*columns: Column) -> np.ndarray | None:
        """Rows valid in every one of ``columns`` (None: all valid)."""
        masks = [c.valid for c in columns if c.valid is not None]
        return np.logical_and.reduce(masks) if masks else None

    def take(self, rows: np.ndarray) -> Column:
        return Column(self.values[rows], None if self.valid is None else self.valid[rows])

    def as_int64(self) -> Column:
        """Polars ``cast(pl.Int64, strict=False)``: floats truncate towards zero; NaN, infinities
        and values outside the int64 range become null."""
        v = self.values
        if v.dtype == np.int64:
            return self
        ok = np.isfinite(v) & (v >= -INT64_LIMIT) & (v < INT64_LIMIT)
        return Column(np.where(ok, np.trunc(np.where(ok, v, 0.0)), 0.0).astype(np.int64), self.mask(ok))

    def as_float64(self) -> Column:
        """Polars ``cast(pl.Float64)`` (integers round to the nearest float)."""
        v = self.values
        return self if v.dtype == np.float64 else Column(v.astype(np.float64), self.valid)


_DTYPES: dict[str, pl.DataType] = {
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "Int16": pl.Int16(),
    "Int8": pl.Int8(),
    "UInt32": pl.UInt32(),
    "String": pl.String(),
    "Float64": pl.Float64(),
    "Float32": pl.Float32(),
    "Boolean": pl.Boolean(),
}


def dtype_name(dtype: pl.DataType) -> str:
    """How the FeatureSpec names a value dtype."""
    return str(dtype)


def dtype_from_name(name: str) -> pl.DataType:
    if name not in _DTYPES:
        raise SpecError(f"encoding dtype '{name}' is not supported ({', '.join(_DTYPES)})")
    return _DTYPES[name]


def integer_bounds(dtype: pl.DataType) -> tuple[int, int] | None:
    """The value range of a narrower integer dtype than Int64 (None for Int64)."""
    if isinstance(dtype, pl.Int64):
        return None
    info = np.iinfo(np.dtype(str(dtype).lower()))
    return int(info.min), int(info.max)


def in_range(column: Column, bounds: tuple[int, int] | None) -> Column:
    """Polars ``cast(dtype, strict=False)`` of an int64 column to the integer dtype of
    :func:`integer_bounds`: values outside its range become null (the values are unchanged)."""
    if bounds is None:
        return column
    v = column.values
    return Column(v, column.mask((v >= bounds[0]) & (v <= bounds[1])))


class Serialisable:
    """A frozen dataclass written to the FeatureSpec as ``{"kind": kind, **fields}``; fields that
    are None are left out (an optional key), and ``init=False`` fields (loaded state) never written."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.init and value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


T = TypeVar("T", bound=Serialisable)


class Registry(Generic[T]):
    """Kind name -> class of one family (categorical encodings, sequence encodings, dense recipes)."""

    def __init__(self, family: str, *classes: type[T]) -> None:
        self.family = family
        self.classes = {c.kind: c for c in classes}

    def from_dict(self, d: Mapping[str, Any], where: str) -> T:
        """The typed object of a FeatureSpec entry; ``where`` names it in errors."""
        kind = d.get("kind")
        if kind not in self.classes:
            raise SpecError(f"{where}.kind: unknown {self.family} kind {kind!r} (known: {', '.join(self.classes)})")
        cls = self.classes[kind]
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(d) - {"kind", *fields})
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: not a key of a {kind} {self.family}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "kind"}
        try:
            return cls(**args)
        except TypeError as e:
            raise SpecError(f"{where}: not a {kind} {self.family} ({e})") from e
