"""Model inputs for candidate rows, shared by the batch and the online scorer (torch-free).

Every value comes from the ETL's own encoder, :class:`data.etl.feature_encoder.FeatureEncoder`: its
Polars path through :class:`data.snapshot.FeatureLookup` (snapshot joins) converted by
:func:`data.tensors.model_inputs`, and, for the few request-side features (below), its numpy path
over the same typed encodings (:mod:`data.encodings`). What this module adds is
*factorisation* (:mod:`serving.factorize`), so that a request of 100 candidates does not pay the
lookup's fixed cost (a ~90-expression Polars query, ~10-15 ms whatever the row count):

* at load time the ETL lookup runs once over every snapshot user (items null) and once over every
  snapshot item (users null); the user-side and item-side columns of those outputs are kept;
* per call, known users and items gather their rows (ids found through a dense id -> row table);
  request-side features (``ts``, context, derived columns) are computed with the encodings' numpy
  functions (:meth:`FeatureEncoder.encode_numpy`, equal to their Polars expressions) or, for
  encodings or inputs without a numpy path (string ids, author columns, string context values),
  through a second ETL lookup restricted to those few features (a sub-spec); the three blocks
  are put in spec order with a few slice copies (:class:`serving.factorize.Layout`). Rows whose user
  or item has no snapshot row go through the full ETL lookup unchanged (rare, and their encoding
  may depend on the raw id, e.g. hashed ids).

The encoder is column-wise, so a column computed for a user in one frame equals that column for the
same user in any frame: the result is exactly the full lookup's. A self-check at load time compares
both on probe rows (snapshot users and items, a year of timestamps, every context value), and the
tests compare them on real candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.data.encodings import Column
from aptrank.data.feature_sides import ITEM, REQUEST, USER, feature_sides
from aptrank.data.snapshot import FeatureLookup
from aptrank.data.spec import INPUT_NAMES, SEQUENCE_INPUTS
from aptrank.data.tensors import model_inputs
from aptrank.serving.encoded import Encoded
from aptrank.serving.errors import CandidateError, ServingError
from aptrank.serving.factorize import EntityRows, Layout, side_positions, sub_spec
from aptrank.serving.probe import probe_rows

SELF_CHECK_ROWS = 256
"""Probe rows (:meth:`CandidateFeatures.probe`) of the load-time self-checks."""
AUTHOR = "author"


class CandidateFeatures:
    """Loads one ETL output (``feature_spec.json``, ``vocab/``, ``snapshot/``) for scoring."""

    def __init__(self, etl_dir: str | Path, self_check: bool = True) -> None:
        self.lookup = FeatureLookup(etl_dir)
        self.spec = self.lookup.spec
        self.context = list(self.lookup.context)
        self.categorical_names = tuple(f.name for f in self.spec.categorical)
        self.sides = feature_sides(self.spec, self.lookup.encoder.derived_names, self.context)
        self.pos = side_positions(self.spec, self.sides)
        self.layouts = {
            n: Layout(
                [self.pos[s][n] for s in (USER, ITEM, REQUEST)], self.spec.max_sequence_len if n == "sequence" else None
            )
            for n in INPUT_NAMES
        }
        self.cutoff = pl.Series([self.spec.extras["snapshot"]["cutoff"]]).str.to_datetime(time_zone="UTC")[0]
        request = {f for f, side in self.sides.items() if side == REQUEST}
        self.request_spec = sub_spec(self.spec, request, Path(etl_dir)) if request else None
        self.request_lookup = FeatureLookup(etl_dir, self.request_spec) if self.request_spec else None
        self.request_numpy = self._numpy_request_side()
        self.users = self._entity_rows(USER)
        self.items = self._entity_rows(ITEM)
        if self_check:
            self.check_against_full_lookup()

    # ---- load time ---------------------------------------------------------------------------
    def _numpy_request_side(self) -> bool:
        """Whether the request sub-spec's features can go through the encoder's numpy path: every
        encoding has one and every raw column they read is ``ts``, a context column or a user or
        item snapshot column (author columns would need the author join)."""
        if self.request_lookup is None or self.request_spec is None or not self.request_lookup.encoder.vectorised:
            return False
        tables = self.request_spec.extras["snapshot"]["tables"]
        if set(tables) - {USER, ITEM}:
            return False
        have = {"ts", *self.context, *(c for meta in tables.values() for c in (*meta["counts"], *meta["columns"]))}
        return set(self.request_lookup.encoder.required_columns()) - {"user_id", "item_id"} <= have

    def _raw_columns(self, side: str, rows: pl.DataFrame) -> dict[str, Column]:
        """Snapshot columns of ``side`` the numpy request-side features read, by entity row
        (counts null-filled with 0 like the lookup's join)."""
        if not self.request_numpy or self.request_spec is None:
            return {}
        meta = self.request_spec.extras["snapshot"]["tables"].get(side, {"counts": [], "columns": []})
        out = {}
        for name in [*meta["counts"], *meta["columns"]]:
            col = Column.from_series(rows[name].fill_null(0) if name in meta["counts"] else rows[name])
            if col is None:  # e.g. a string attribute: the Polars path serves the request side
                self.request_numpy = False
                return {}
            out[name] = col
        return out

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
        return EntityRows(keys, arrays, extra, self._raw_columns(side, rows))

    def sample(self, n: int) -> pl.DataFrame:
        """``n`` candidates pairing snapshot users with snapshot items at the cutoff (warm-up, checks)."""
        if self.users is None or self.items is None:
            return self._frame(None, None, n)
        users = pl.Series("user_id", np.resize(self.users.keys, n)).cast(self.users.dtype)
        items = pl.Series("item_id", np.resize(self.items.keys[::-1], n)).cast(self.items.dtype)
        return self._frame(users, items, n)

    def probe(self, n: int) -> pl.DataFrame:
        """:meth:`sample` rows with varied timestamps and context values (:func:`serving.probe.probe_rows`)."""
        return probe_rows(self.sample(n), self.spec, self.context)

    def check_against_full_lookup(self) -> None:
        """Encode :meth:`probe` candidates both ways; raise when the factorised path differs."""
        frame = self.probe(SELF_CHECK_ROWS)
        fast, full = self.encode(frame), self.encode_full(frame)
        for name in INPUT_NAMES:
            if not np.array_equal(fast.arrays[name], full.arrays[name]):
                raise ServingError(
                    f"factorised feature lookup differs from data.snapshot.FeatureLookup on "
                    f"'{name}': the ETL's encoder is no longer column-wise"
                )

    # ---- per call ----------------------------------------------------------------------------
    def _check(self, candidates: pl.DataFrame) -> None:
        missing = [c for c in ("user_id", "item_id", "ts", *self.context) if c not in candidates.columns]
        if missing:
            raise CandidateError(
                f"candidates lack required columns {missing} (have {candidates.columns}; "
                f"context columns of this FeatureSpec: {self.context})"
            )

    def _find(self, candidates: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (
            self.users.find(candidates["user_id"]) if self.users is not None else None,
            self.items.find(candidates["item_id"]) if self.items is not None else None,
        )

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

    def _request_numpy(self, candidates: pl.DataFrame, u: np.ndarray, i: np.ndarray) -> dict[str, np.ndarray] | None:
        """Request-side arrays by the encoder's numpy path (known users and items only); None when it
        does not apply to these candidates (a null ``ts``, a non-numeric context column)."""
        ts = candidates["ts"]
        if not self.request_numpy or self.request_lookup is None or self.users is None or self.items is None:
            return None
        if ts.null_count():
            return None
        if ts.dtype.is_integer():
            ts_ms = ts.cast(pl.Int64).to_numpy()
        elif isinstance(ts.dtype, pl.Datetime):
            ts_ms = ts.dt.cast_time_unit("ms").to_physical().to_numpy()
        else:
            return None
        columns = {
            "ts": Column(ts_ms),
            **{k: v.take(u) for k, v in self.users.raw.items()},
            **{k: v.take(i) for k, v in self.items.raw.items()},
        }
        for c in self.context:
            col = Column.from_series(candidates[c])
            if col is None:
                return None
            columns[c] = col
        n = candidates.height
        out = self.request_lookup.encoder.encode_numpy(columns, n)
        out["sequence"] = np.zeros((n, 0, self.spec.max_sequence_len), np.int64)
        out["sequence_lengths"] = np.zeros((n, 0), np.int64)
        return out

    def _request_polars(self, candidates: pl.DataFrame) -> dict[str, np.ndarray]:
        assert self.request_lookup is not None and self.request_spec is not None
        return model_inputs(self.request_lookup.build(candidates).frame, self.request_spec)

    def encode_full(self, candidates: pl.DataFrame) -> Encoded:
        """The ETL lookup on every row (no factorisation)."""
        self._check(candidates)
        return self._encode_full(candidates, *self._find(candidates))

    def _encode_full(self, candidates: pl.DataFrame, u: np.ndarray | None, i: np.ndarray | None) -> Encoded:
        arrays = model_inputs(self.lookup.build(candidates).frame, self.spec)
        return Encoded(arrays, self._missing(u, i), self.categorical_names, u)

    def encode(self, candidates: pl.DataFrame) -> Encoded:
        """Model inputs for ``candidates`` (``user_id``, ``item_id``, ``ts``, context columns)."""
        self._check(candidates)
        return self._encode_found(candidates, *self._find(candidates))

    def _encode_found(self, candidates: pl.DataFrame, u: np.ndarray | None, i: np.ndarray | None) -> Encoded:
        """:meth:`encode` once the candidates are checked and their snapshot rows ``u``, ``i`` found."""
        if self.users is None or self.items is None or u is None or i is None:
            return self._encode_full(candidates, u, i)
        known = (u >= 0) & (i >= 0)
        if not known.any():
            if not len(known):
                return Encoded(self._empty(0), self._missing(u, i), self.categorical_names, u)
            return self._encode_full(candidates, u, i)
        if known.all():
            return self._encode_known(candidates, u, i)
        fast, slow = np.flatnonzero(known), np.flatnonzero(~known)
        blocks = self._encode_known(candidates[fast], u[fast], i[fast]).arrays
        arrays = self._empty(candidates.height)
        full = model_inputs(self.lookup.build(candidates[slow]).frame, self.spec)
        for name in INPUT_NAMES:
            arrays[name][fast] = blocks[name]
            arrays[name][slow] = full[name]
        return Encoded(arrays, self._missing(u, i), self.categorical_names, u)

    def encode_blocks(self, candidates: pl.DataFrame, block_rows: int, sequences: bool = True) -> Iterator[Encoded]:
        """:meth:`encode` of ``candidates`` as consecutive blocks of at most ``block_rows`` rows (the
        same arrays, sliced). When every user and item has a snapshot row (the common case) each
        block is encoded on its own, so a chunk never holds its whole arrays at once (why:
        ``serving.scorer.SCORE_BLOCK_ROWS``), and without the sequence arrays unless ``sequences``
        (the scorer reads the users' precomputed part instead: ``serving.user_precompute``);
        otherwise the chunk is encoded whole, so the rows without a snapshot row pay the ETL
        lookup's fixed cost once."""
        if block_rows < 1:
            raise ValueError(f"encode_blocks: block_rows must be >= 1, got {block_rows}")
        self._check(candidates)
        u, i = self._find(candidates)
        if u is None or i is None or not candidates.height or not ((u >= 0) & (i >= 0)).all():
            whole = self._encode_found(candidates, u, i)
            yield from (whole.slice(s, s + block_rows) for s in range(0, max(whole.rows, 1), block_rows))
            return
        for s in range(0, candidates.height, block_rows):
            stop = s + block_rows
            yield self._encode_known(candidates.slice(s, block_rows), u[s:stop], i[s:stop], sequences)

    def _encode_known(self, candidates: pl.DataFrame, u: np.ndarray, i: np.ndarray, sequences: bool = True) -> Encoded:
        """:meth:`encode` of candidates whose users and items all have snapshot rows ``u``, ``i``:
        the precomputed user and item columns and the request side, assembled in spec order (the
        sequence arrays only if ``sequences``)."""
        assert self.users is not None and self.items is not None
        request = self._request_numpy(candidates, u, i)
        if request is None and self.request_lookup is not None:
            request = self._request_polars(candidates)
        elif request is None:  # no request-side features: empty blocks
            request = {name: a[:, :0] for name, a in self._empty(len(u)).items()}
        arrays = {
            n: self.layouts[n].assemble(
                [self.users.arrays[n].take(u, axis=0), self.items.arrays[n].take(i, axis=0), request[n]]
            )
            for n in INPUT_NAMES
            if sequences or n not in SEQUENCE_INPUTS
        }
        return Encoded(arrays, self._missing(u, i), self.categorical_names, u)

    def input_shape(self, name: str) -> tuple[int, ...]:
        """A model input array's shape after the batch axis (data.tensors' layout)."""
        s = self.spec
        columns = {"categorical": len(s.categorical), "dense": len(s.dense)}.get(name, len(s.sequence))
        return (columns, s.max_sequence_len) if name == "sequence" else (columns,)

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        dtypes = {"dense": np.float32}
        return {name: np.zeros((n, *self.input_shape(name)), dtypes.get(name, np.int64)) for name in INPUT_NAMES}
