"""Stable 64-bit hashes of id columns (same value -> same hash on every machine and Polars version).

Polars' own ``hash`` is explicitly not stable across versions, so hashed ids use:

* integers: the splitmix64 finaliser (Steele, Lea & Flood, "Fast Splittable Pseudorandom Number
  Generators", OOPSLA 2014; constants from Vigna's public-domain splitmix64.c), as Polars UInt64
  expressions (wrapping arithmetic) and in numpy (request-time features, :mod:`data.encodings`);
* strings: 64-bit FNV-1a over the UTF-8 bytes (Fowler, Noll & Vo; constants from the IETF draft
  draft-eastlake-fnv), vectorised over rows with numpy, one pass per byte position.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _u64(value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.UInt64)


def _shr(expr: pl.Expr, bits: int) -> pl.Expr:
    return expr // _u64(1 << bits)


def splitmix64(expr: pl.Expr) -> pl.Expr:
    """splitmix64 finaliser of an integer expression (reinterpreted as UInt64)."""
    z = expr.cast(pl.Int64).reinterpret(signed=False) + _u64(_GAMMA)
    z = (z.xor(_shr(z, 30))) * _u64(_M1)
    z = (z.xor(_shr(z, 27))) * _u64(_M2)
    return z.xor(_shr(z, 31))


def fnv1a_strings(values: pl.Series) -> pl.Series:
    """64-bit FNV-1a of each string's UTF-8 bytes (null stays null)."""
    arr = values.cast(pl.String).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):
            live = lengths > j
            h[live] = (h[live] ^ data[offsets[:-1][live] + j].astype(np.uint64)) * _FNV_PRIME
    out = pl.Series(values.name, h, dtype=pl.UInt64)
    return out.set(values.is_null(), None) if values.null_count() else out


def stable_hash(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """UInt64 stable hash of ``expr`` whose values have ``dtype`` (integer or string)."""
    if dtype.is_integer():
        return splitmix64(expr)
    if dtype == pl.String:
        return expr.map_batches(fnv1a_strings, return_dtype=pl.UInt64, is_elementwise=True)
    raise TypeError(f"hash encoding supports integer or string columns, not {dtype}")


def splitmix64_numpy(values: np.ndarray) -> np.ndarray:
    """:func:`splitmix64` of int64 ``values`` in numpy (uint64, wrapping arithmetic)."""
    z = values.astype(np.int64, copy=False).view(np.uint64) + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))
