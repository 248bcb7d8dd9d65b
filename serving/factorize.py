"""The array plumbing of the factorised feature lookup (:mod:`serving.features`): each side's
columns of the model inputs (which side a feature depends on: :mod:`data.feature_sides`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.data.encodings import Column
from aptrank.data.etl.feature_encoder import FeatureEncoder
from aptrank.data.feature_sides import ITEM, REQUEST, USER
from aptrank.data.spec import FeatureSpec

ARRAY_GROUPS: dict[str, str] = {
    "categorical": "categorical",
    "sequence": "sequence",
    "sequence_lengths": "sequence",
    "dense": "dense",
}
"""Model input array -> the FeatureSpec list whose order its columns follow."""


def side_positions(spec: FeatureSpec, sides: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """side -> model input array -> indexes of that side's features among the array's columns."""
    return {
        side: {
            array: np.array([i for i, f in enumerate(getattr(spec, group)) if sides[f.name] == side], np.int64)
            for array, group in ARRAY_GROUPS.items()
        }
        for side in (USER, ITEM, REQUEST)
    }


def sub_spec(spec: FeatureSpec, names: set[str], base_dir: Path) -> FeatureSpec:
    """``spec`` restricted to the features ``names`` and its snapshot layout to the columns they read,
    so a lookup built on it joins only what it needs."""
    part = dataclasses.replace(
        spec,
        categorical=tuple(f for f in spec.categorical if f.name in names),
        sequence=tuple(f for f in spec.sequence if f.name in names),
        dense=tuple(f for f in spec.dense if f.name in names),
    )
    needed = set(FeatureEncoder(part, base_dir).required_columns())
    snapshot = spec.extras["snapshot"]
    used = [e for e, m in snapshot["tables"].items() if needed & {*m["counts"], *m["columns"]}]
    needed |= {snapshot["tables"][e]["key"] for e in used}  # e.g. author_id, read from the item table
    tables = {}
    for entity, meta in snapshot["tables"].items():
        counts = [c for c in meta["counts"] if c in needed]
        columns = [c for c in meta["columns"] if c in needed]
        if counts or columns:
            tables[entity] = {**meta, "counts": counts, "columns": columns}
    return dataclasses.replace(part, extras={**spec.extras, "snapshot": {**snapshot, "tables": tables}})


class EntityRows:
    """Precomputed input columns of one side for every snapshot key, found by id: through a dense
    id -> row table when the keys are compact non-negative integers, else by binary search.
    ``raw`` holds snapshot columns the request-side features read, by row."""

    def __init__(
        self,
        keys: pl.Series,
        arrays: dict[str, np.ndarray],
        extra: dict[str, np.ndarray] | None = None,
        raw: dict[str, Column] | None = None,
    ):
        order = np.argsort(keys.to_numpy(), kind="stable")
        self.dtype = keys.dtype
        self.keys = keys.to_numpy()[order]
        self.rows = order
        self.arrays = arrays
        self.extra = extra or {}
        self.raw = raw or {}
        self.table: np.ndarray | None = None
        k = self.keys
        if keys.dtype.is_integer() and len(k) and k[0] >= 0 and k[-1] < 4 * len(k) + (1 << 20):
            self.table = np.full(int(k[-1]) + 1, -1, dtype=np.int64)
            self.table[k] = order

    def find(self, ids: pl.Series) -> np.ndarray:
        """Row per id, -1 when the id (cast to the key type like the ETL lookup's join) has no row."""
        if not len(self.keys):
            return np.full(len(ids), -1, dtype=np.int64)
        if ids.dtype != self.dtype or ids.null_count():
            ids = ids.cast(self.dtype, strict=False)
        valid = ids.is_not_null().to_numpy() if ids.null_count() else None
        values = ids.to_numpy() if valid is None else ids.fill_null(self.keys[0]).to_numpy()
        if self.table is not None:
            inside = (values >= 0) & (values < len(self.table))
            found = np.where(inside, self.table[np.where(inside, values, 0)], -1)
            return found if valid is None else np.where(valid, found, -1)
        pos = np.minimum(np.searchsorted(self.keys, values), len(self.keys) - 1)
        hit = self.keys[pos] == values
        if valid is not None:
            hit &= valid
        return np.where(hit, self.rows[pos], -1)


class Layout:
    """Assembles one model input array from the user, item and request blocks (each holding its
    side's columns in spec order): every run of output columns that come from consecutive columns
    of one block is one slice copy."""

    def __init__(self, positions: list[np.ndarray], width: int | None = None) -> None:
        source = {int(col): (b, k) for b, cols in enumerate(positions) for k, col in enumerate(cols.tolist())}
        self.columns = len(source)
        self.runs: list[tuple[int, int, int, int]] = []  # (block, first block column, first output column, length)
        for j in range(self.columns):
            b, k = source[j]
            last = self.runs[-1] if self.runs else None
            if last is not None and last[0] == b and last[1] + last[3] == k:
                self.runs[-1] = (b, last[1], last[2], last[3] + 1)
            else:
                self.runs.append((b, k, j, 1))
        self.width = width

    def assemble(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The array in spec order; a narrower sequence block (a sub-spec's shorter padded width) fills
        the first positions, the rest is 0-padding."""
        if len(self.runs) == 1:  # one block holds every column in order: use it as it is
            b, k, _, length = self.runs[0]
            whole = blocks[b]
            if k == 0 and whole.shape[1] == length and (self.width is None or whole.shape[2] == self.width):
                return whole
        first = blocks[0]
        shape = (first.shape[0], self.columns, *((self.width,) if self.width is not None else first.shape[2:]))
        out = np.empty(shape, first.dtype)
        for b, k, j, length in self.runs:
            src = blocks[b][:, k : k + length]
            if out.ndim == 3 and src.shape[2] != out.shape[2]:
                out[:, j : j + length, src.shape[2] :] = 0
                out[:, j : j + length, : src.shape[2]] = src
            else:
                out[:, j : j + length] = src
        return out
