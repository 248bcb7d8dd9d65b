"""Request-side features in numpy: the encodings of the features that read ``ts``, context columns
or derived columns (hour, weekday, item age), computed without a Polars query.

The factorised lookup (:mod:`serving.features`) gathers user-side and item-side columns from arrays
precomputed by the ETL's own lookup; what varies per request (a handful of features) would otherwise
need a Polars query per call, whose fixed cost (~1-2 ms) dominates an online request of 100
candidates. This module evaluates those few features with numpy, for the encoding kinds the ETL
writes for them (categorical ``vocab`` with a dense table, ``range``, ``buckets``; dense ``value``
recipes; derived ``hour``, ``weekday``, ``item_age_days``). Anything else (hashed or string
categories, sequences, other recipes, non-integer context values) is not handled here:
:meth:`RequestEncoder.build` returns None, or :meth:`RequestEncoder.encode` returns None for that
call, and the caller runs the ETL lookup instead.

It is a port of :mod:`data.etl.encoding`, :mod:`data.etl.dense` and
:func:`data.etl.encode.derived_exprs`, so :class:`serving.features.CandidateFeatures` compares it with
the ETL lookup at load time on probe rows (every context value of the vocabularies, unseen and null
values, timestamps over a year) and does not use it when they differ. ``log1p`` goes through
:func:`math.log1p` (the C library's, which Polars calls too), not numpy's vectorised one, whose
last bit may differ.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from aptrank.data.etl.encode import DAY_MS, HOUR, ITEM_AGE, ITEM_UPLOAD, WEEKDAY, FeatureEncoder
from aptrank.data.spec import OOV_INDEX, FeatureSpec

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
GRID_HOURS = 2048
LOCAL_TS = "_local_ts"
DERIVED_INPUTS: dict[str, tuple[str, ...]] = {HOUR: ("ts",), WEEKDAY: ("ts",), ITEM_AGE: ("ts", ITEM_UPLOAD)}
"""Raw columns each derived column of :func:`data.etl.encode.derived_exprs` reads."""


@dataclass(frozen=True)
class Raw:
    """A raw column as numpy: values (int64 or float64) and the valid mask (None: no nulls)."""

    values: np.ndarray
    valid: np.ndarray | None = None

    def mask(self, ok: np.ndarray) -> np.ndarray:
        return ok if self.valid is None else ok & self.valid

    def take(self, rows: np.ndarray) -> Raw:
        return Raw(self.values[rows], None if self.valid is None else self.valid[rows])


def raw_column(series: pl.Series) -> Raw | None:
    """A numeric, datetime (as epoch ms) or all-null column as :class:`Raw`; None for other dtypes."""
    s = series
    if s.dtype == pl.Null:
        return Raw(np.zeros(len(s), np.int64), np.zeros(len(s), bool))
    if isinstance(s.dtype, pl.Datetime):
        s = s.dt.cast_time_unit("ms").to_physical()
    if not (s.dtype.is_integer() or s.dtype.is_float()):
        return None
    kind = np.float64 if s.dtype.is_float() else np.int64
    if not s.null_count():
        return Raw(s.to_numpy().astype(kind, copy=False))
    return Raw(s.fill_null(0).to_numpy().astype(kind, copy=False), s.is_not_null().to_numpy())


def _offsets(ms: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """``zone``'s UTC offset (ms) at each epoch-ms instant."""
    unit = dt.timedelta(milliseconds=1)
    return np.array(
        [dt.datetime.fromtimestamp(m // 1000, zone).utcoffset() // unit for m in ms.tolist()], dtype=np.int64
    )


def local_time(ts_ms: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """Epoch ms shifted by ``zone``'s UTC offset at each instant. The offset is looked up at the
    first and last second of every UTC hour the timestamps fall in; in the rare hour where the two
    differ (a clock change), per minute (offsets and clock changes fall on whole minutes)."""
    if not ts_ms.size:
        return ts_ms
    hours = ts_ms // HOUR_MS
    lo, hi = int(hours.min()), int(hours.max())
    if hi - lo < GRID_HOURS:  # a dense hour grid: no sort
        grid, index = np.arange(lo, hi + 1, dtype=np.int64), hours - lo
    else:
        grid, index = np.unique(hours, return_inverse=True)
        index = index.reshape(-1)
    start, end = _offsets(grid * HOUR_MS, zone), _offsets((grid + 1) * HOUR_MS - 1000, zone)
    offset = start[index]
    change = np.flatnonzero((start != end)[index])
    if change.size:
        offset[change] = _offsets(ts_ms[change] // MINUTE_MS * MINUTE_MS, zone)
    return ts_ms + offset


def derived_columns(names: list[str], time_zone: str) -> dict[str, Callable[[Mapping[str, Raw]], Raw]]:
    """Derived column -> its numpy function of the raw columns (``ts``, ``item_upload_ts``), as
    :func:`data.etl.encode.derived_exprs` defines them, in evaluation order (the local time first
    when hour or weekday need it); names it does not know are left out."""
    zone = zoneinfo.ZoneInfo(time_zone)

    def local_ts(raw: Mapping[str, Raw]) -> Raw:
        return Raw(local_time(raw["ts"].values, zone))

    def hour(raw: Mapping[str, Raw]) -> Raw:
        return Raw((raw[LOCAL_TS].values // HOUR_MS) % 24)

    def weekday(raw: Mapping[str, Raw]) -> Raw:  # ISO weekday; 1970-01-01 was a Thursday (4)
        return Raw((raw[LOCAL_TS].values // DAY_MS + 3) % 7 + 1)

    def item_age(raw: Mapping[str, Raw]) -> Raw:
        upload = raw[ITEM_UPLOAD]
        age = np.maximum((raw["ts"].values - upload.values).astype(np.float64) / DAY_MS, 0.0)
        return Raw(age, upload.valid)

    known = {HOUR: hour, WEEKDAY: weekday, ITEM_AGE: item_age}
    out = {n: known[n] for n in names if n in known}
    return {LOCAL_TS: local_ts, **out} if {HOUR, WEEKDAY} & set(out) else out


def _categorical(enc: dict, table: np.ndarray | None) -> Callable[[Raw], np.ndarray] | None:
    kind = enc["kind"]
    if kind == "vocab" and table is not None:

        def vocab(r: Raw) -> np.ndarray:
            v = r.values.astype(np.int64, copy=False)
            inside = r.mask((v >= 0) & (v < len(table)))
            return np.where(inside, table[np.where(inside, v, 0)], OOV_INDEX)

        return vocab
    if kind == "range":
        low, high = int(enc["low"]), int(enc["high"])
        return lambda r: np.where(r.mask((r.values >= low) & (r.values <= high)), r.values - low + 1, OOV_INDEX)
    if kind == "buckets":
        bounds = np.asarray(enc["boundaries"], dtype=np.float64)

        def buckets(r: Raw) -> np.ndarray:
            v = r.values.astype(np.float64)
            inside = 1 + (v[:, None] >= bounds[None, :]).sum(axis=1)
            return np.where(r.mask(v >= 0), inside, OOV_INDEX)

        return buckets
    return None


def _dense(recipe: dict, mean: float, std: float, fill: float) -> Callable[[Raw], np.ndarray] | None:
    if recipe["kind"] != "value":
        return None
    log1p = bool(recipe.get("log1p"))

    def value(r: Raw) -> np.ndarray:
        v = r.values.astype(np.float64)
        if log1p:
            v = np.fromiter(map(math.log1p, np.maximum(v, 0.0).tolist()), np.float64, len(v))
        x = (v - mean) / std
        bad = np.isnan(x) if r.valid is None else np.isnan(x) | ~r.valid
        return np.where(bad, fill, x).astype(np.float32)

    return value


@dataclass(frozen=True)
class RequestEncoder:
    """Numpy encoders of a request sub-spec's categorical and dense features (see module docstring)."""

    categorical: tuple[tuple[str, Callable[[Raw], np.ndarray]], ...]
    dense: tuple[tuple[str, Callable[[Raw], np.ndarray]], ...]
    derived: dict[str, Callable[[Mapping[str, Raw]], Raw]]
    context: tuple[str, ...]

    @classmethod
    def build(
        cls, spec: FeatureSpec, encoder: FeatureEncoder, context: list[str], snapshot: set[str]
    ) -> RequestEncoder | None:
        """The encoder of ``spec`` (a request sub-spec) whose features read ``ts``, the ``context``
        columns, derived columns and the ``snapshot`` columns (gathered per candidate by the caller),
        or None when one of its features is of a kind this module does not handle."""
        derived = derived_columns(encoder.derived, encoder.time_zone)
        have = {"ts", *context, *snapshot}
        if (
            spec.sequence
            or set(encoder.derived) - set(derived)
            or any(set(DERIVED_INPUTS[n]) - have for n in encoder.derived)
        ):
            return None
        cats = [
            (f.encoding["source"], _categorical(f.encoding, encoder.categorical[f.name].table))
            for f in spec.categorical
        ]
        dense = []
        for d in spec.dense:
            recipe = encoder.recipes[d.name]
            dense.append((recipe.get("column", ""), _dense(recipe, d.mean, d.std, d.fill)))
        readable = have | set(encoder.derived)
        if any(fn is None or source not in readable for source, fn in (*cats, *dense)):
            return None
        return cls(tuple(cats), tuple(dense), derived, tuple(context))  # type: ignore[arg-type]

    def encode(
        self, candidates: pl.DataFrame, ts_ms: np.ndarray, snapshot: Mapping[str, Raw]
    ) -> dict[str, np.ndarray] | None:
        """``categorical`` int64 [n, C] and ``dense`` float32 [n, D] of the sub-spec for
        ``candidates`` at ``ts_ms``; ``snapshot`` holds the snapshot columns the features read
        (gathered per candidate). None when a context column is not integer or null."""
        raw: dict[str, Raw] = {"ts": Raw(ts_ms), **snapshot}
        for c in self.context:
            col = raw_column(candidates[c])
            if col is None or col.values.dtype != np.int64:
                return None
            raw[c] = col
        for name, fn in self.derived.items():
            raw[name] = fn(raw)
        n = len(ts_ms)
        categorical = np.empty((n, len(self.categorical)), np.int64)
        for j, (source, fn) in enumerate(self.categorical):
            categorical[:, j] = fn(raw[source])
        dense = np.empty((n, len(self.dense)), np.float32)
        for j, (source, fn) in enumerate(self.dense):
            dense[:, j] = fn(raw[source])
        return {"categorical": categorical, "dense": dense}
