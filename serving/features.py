"""Model inputs for candidate rows, shared by the batch and the online scorer (torch-free).

Every value comes from the ETL's own lookup, :class:`data.snapshot.FeatureLookup` (snapshot joins +
:class:`data.etl.encode.FeatureEncoder`), converted by :func:`data.tensors.model_inputs`: there is no
second feature implementation here. What this module adds is *factorisation* (:mod:`serving.factorize`),
so that a request of 100 candidates does not pay the lookup's fixed cost (a ~90-expression Polars
query, ~10-15 ms whatever the row count):

* at load time the ETL lookup runs once over every snapshot user (items null) and once over every
  snapshot item (users null); the user-side and item-side columns of those outputs are kept;
* per call, known users and items gather their rows; request-side features (``ts``, context, derived
  columns) run through a second ETL lookup restricted to those few features (same code, a sub-spec);
  rows whose user or item has no snapshot row go through the full ETL lookup unchanged (rare, and
  their encoding may depend on the raw id, e.g. hashed ids).

The encoder is column-wise, so a column computed for a user in one frame equals that column for the
same user in any frame: the result is exactly the full lookup's. A self-check at load time compares
both on snapshot rows, and the tests compare them on real candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data.snapshot import FeatureLookup
from data.spec import INPUT_NAMES, OOV_INDEX
from data.tensors import model_inputs
from serving.errors import CandidateError, ServingError
from serving.factorize import ITEM, REQUEST, USER, EntityRows, feature_sides, put, side_positions, sub_spec

SELF_CHECK_ROWS = 64
AUTHOR = "author"


@dataclass
class Encoded:
    """Model input arrays for candidates (candidate order) and what was defaulted: per entity a row
    flag for candidates without a snapshot row; OOV counts are read off the categorical array."""

    arrays: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    categorical_names: tuple[str, ...]

    @property
    def rows(self) -> int:
        return int(self.arrays["categorical"].shape[0])

    @property
    def missing_rows(self) -> dict[str, int]:
        """Per entity: candidates without a snapshot row (defaults used)."""
        return {e: int(flags.sum()) for e, flags in self.missing.items()}

    @property
    def oov(self) -> dict[str, int]:
        """Per categorical feature: candidates encoded to the OOV row (unseen or null value)."""
        counts = (self.arrays["categorical"] == OOV_INDEX).sum(axis=0).tolist()
        return dict(zip(self.categorical_names, (int(c) for c in counts), strict=True))

    def slice(self, start: int, stop: int) -> Encoded:
        return Encoded({k: v[start:stop] for k, v in self.arrays.items()},
                       {k: v[start:stop] for k, v in self.missing.items()}, self.categorical_names)


class CandidateFeatures:
    """Loads one ETL output (``feature_spec.json``, ``vocab/``, ``snapshot/``) for scoring."""

    def __init__(self, etl_dir: str | Path, self_check: bool = True) -> None:
        self.lookup = FeatureLookup(etl_dir)
        self.spec = self.lookup.spec
        self.context = list(self.lookup.context)
        self.categorical_names = tuple(f.name for f in self.spec.categorical)
        self.sides = feature_sides(self.spec, self.lookup.encoder, self.context)
        self.pos = side_positions(self.spec, self.sides)
        self.cutoff = pl.Series([self.spec.extras["snapshot"]["cutoff"]]).str.to_datetime(time_zone="UTC")[0]
        self.users = self._entity_rows(USER)
        self.items = self._entity_rows(ITEM)
        request = {f for f, side in self.sides.items() if side == REQUEST}
        self.request_spec = sub_spec(self.spec, request, Path(etl_dir)) if request else None
        self.request_lookup = FeatureLookup(etl_dir, self.request_spec) if self.request_spec else None
        if self_check:
            self.check_against_full_lookup()

    # ---- load time ---------------------------------------------------------------------------
    def _frame(self, user_ids: pl.Series | None, item_ids: pl.Series | None, n: int) -> pl.DataFrame:
        """Candidates at the snapshot cutoff with null context; absent ids are null."""
        def ids(given: pl.Series | None, entity: str) -> pl.Series:
            if given is not None:
                return given
            meta, table = self.lookup.tables.get(entity, ({"key": ""}, pl.DataFrame()))
            return pl.Series([None] * n, dtype=table.schema.get(meta["key"], pl.Int64()))

        frame = pl.DataFrame({"user_id": ids(user_ids, USER), "item_id": ids(item_ids, ITEM)})
        return frame.with_columns(pl.lit(self.cutoff).alias("ts"), *(pl.lit(None).alias(c) for c in self.context))

    def _entity_rows(self, side: str) -> EntityRows | None:
        """The full lookup over every key of the side's table; keeps that side's columns (and, for
        items, whether the item's author has a snapshot row)."""
        if side not in self.lookup.tables:
            return None
        meta, table = self.lookup.tables[side]
        rows = table.filter(pl.col(meta["key"]).is_not_null()).unique(meta["key"], keep="first", maintain_order=True)
        keys = rows[meta["key"]]
        frame = self._frame(keys if side == USER else None, keys if side == ITEM else None, keys.len())
        full = model_inputs(self.lookup.build(frame).frame, self.spec)
        arrays = {n: np.ascontiguousarray(full[n][:, self.pos[side][n]]) for n in INPUT_NAMES}
        extra = {}
        if side == ITEM and AUTHOR in self.lookup.tables:
            ameta, authors = self.lookup.tables[AUTHOR]
            author = rows[ameta["key"]].cast(authors.schema[ameta["key"]], strict=False)
            extra[AUTHOR] = ~author.is_in(authors[ameta["key"]].implode()).to_numpy()
        return EntityRows(keys, arrays, extra)

    def sample(self, n: int) -> pl.DataFrame:
        """``n`` candidates pairing snapshot users with snapshot items at the cutoff (warm-up, checks)."""
        if self.users is None or self.items is None:
            return self._frame(None, None, n)
        users = pl.Series("user_id", np.resize(self.users.keys, n)).cast(self.users.dtype)
        items = pl.Series("item_id", np.resize(self.items.keys[::-1], n)).cast(self.items.dtype)
        return self._frame(users, items, n)

    def check_against_full_lookup(self) -> None:
        """Encode :meth:`sample` candidates both ways; raise when the factorised path differs."""
        frame = self.sample(SELF_CHECK_ROWS)
        fast, full = self.encode(frame), self.encode_full(frame)
        for name in INPUT_NAMES:
            if not np.array_equal(fast.arrays[name], full.arrays[name]):
                raise ServingError(f"factorised feature lookup differs from data.snapshot.FeatureLookup on "
                                   f"'{name}': the ETL's encoder is no longer column-wise")

    # ---- per call ----------------------------------------------------------------------------
    def _check(self, candidates: pl.DataFrame) -> None:
        missing = [c for c in ("user_id", "item_id", "ts", *self.context) if c not in candidates.columns]
        if missing:
            raise CandidateError(f"candidates lack required columns {missing} (have {candidates.columns}; "
                                 f"context columns of this FeatureSpec: {self.context})")

    def _find(self, candidates: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (self.users.find(candidates["user_id"]) if self.users is not None else None,
                self.items.find(candidates["item_id"]) if self.items is not None else None)

    def _missing(self, u: np.ndarray | None, i: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per snapshot entity, rows without a snapshot row: the user or item id is no snapshot key;
        the author is missing when the item is, or the item's author is."""
        out: dict[str, np.ndarray] = {}
        if u is not None:
            out[USER] = u < 0
        if i is not None and self.items is not None:
            out[ITEM] = i < 0
            if AUTHOR in self.items.extra:
                out[AUTHOR] = (i < 0) | self.items.extra[AUTHOR][np.maximum(i, 0)]
        return out

    def encode_full(self, candidates: pl.DataFrame) -> Encoded:
        """The ETL lookup on every row (no factorisation)."""
        self._check(candidates)
        arrays = model_inputs(self.lookup.build(candidates).frame, self.spec)
        return Encoded(arrays, self._missing(*self._find(candidates)), self.categorical_names)

    def encode(self, candidates: pl.DataFrame) -> Encoded:
        """Model inputs for ``candidates`` (``user_id``, ``item_id``, ``ts``, context columns)."""
        self._check(candidates)
        u, i = self._find(candidates)
        if self.users is None or self.items is None or u is None or i is None:
            return self.encode_full(candidates)
        n = candidates.height
        fast, slow = np.flatnonzero((u >= 0) & (i >= 0)), np.flatnonzero((u < 0) | (i < 0))
        rows = None if fast.size == n else fast
        arrays = self._empty(n)
        for side, index, src in ((USER, u[fast], self.users.arrays), (ITEM, i[fast], self.items.arrays)):
            for name in INPUT_NAMES:
                put(arrays[name], rows, self.pos[side][name], src[name].take(index, axis=0))
        if self.request_lookup is not None and self.request_spec is not None and fast.size:
            part = candidates if rows is None else candidates[fast]
            sub = model_inputs(self.request_lookup.build(part).frame, self.request_spec)
            for name in INPUT_NAMES:
                put(arrays[name], rows, self.pos[REQUEST][name], sub[name])
        if slow.size:
            full = model_inputs(self.lookup.build(candidates[slow]).frame, self.spec)
            for name in INPUT_NAMES:
                arrays[name][slow] = full[name]
        return Encoded(arrays, self._missing(u, i), self.categorical_names)

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        s = self.spec
        return {
            "categorical": np.zeros((n, len(s.categorical)), np.int64),
            "sequence": np.zeros((n, len(s.sequence), s.max_sequence_len), np.int64),
            "sequence_lengths": np.zeros((n, len(s.sequence)), np.int64),
            "dense": np.zeros((n, len(s.dense)), np.float32),
        }
