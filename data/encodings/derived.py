"""Derived columns: computed from the impression time ``ts`` (and the item's upload time) when a raw
frame is encoded, then read by categorical encodings and dense recipes like any raw column.

One class per derived column, each with its Polars expression and its numpy function of epoch
milliseconds; both give the same values (``tests/data/test_encodings.py``, clock changes included):

* :class:`Hour` (``hour``): hour of day 0-23 of ``ts`` in the spec's time zone;
* :class:`Weekday` (``weekday``): ISO weekday 1 (Monday) .. 7 of ``ts`` in that time zone;
* :class:`ItemAge` (``item_age_days``): days from the item's upload to ``ts``, >= 0.

The FeatureSpec lists them by name in ``extras["derived"]``; :func:`derived_columns` is the only
place that reads those names.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import ClassVar

import numpy as np
import polars as pl

from aptrank.data.encodings.base import Column, SpecError

HOUR, WEEKDAY, ITEM_AGE = "hour", "weekday", "item_age_days"
ITEM_UPLOAD = "item_upload_ts"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
GRID_HOURS = 2048


def _offsets(ms: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """``zone``'s UTC offset (ms) at each epoch-ms instant."""
    unit = dt.timedelta(milliseconds=1)
    return np.array(
        [dt.datetime.fromtimestamp(m // 1000, zone).utcoffset() // unit for m in ms.tolist()], dtype=np.int64
    )


@lru_cache(maxsize=4096)
def _hour_offsets(hour: int, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
    """``zone``'s UTC offset (ms) at the first and the last second of UTC hour ``hour``."""
    start, end = _offsets(np.array([hour * HOUR_MS, (hour + 1) * HOUR_MS - 1000]), zone).tolist()
    return start, end


def local_time(ts_ms: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """Epoch ms shifted by ``zone``'s UTC offset at each instant. The offset is looked up at the
    first and last second of every UTC hour the timestamps fall in (memoised when they all fall in
    one hour, as an online request's do); in the rare hour where the two differ (a clock change),
    per minute (offsets and clock changes fall on whole minutes)."""
    if not ts_ms.size:
        return ts_ms
    hours = ts_ms // HOUR_MS
    lo, hi = int(hours.min()), int(hours.max())
    if lo == hi:
        start, end = _hour_offsets(lo, zone)
        if start == end:
            return ts_ms + start
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


class Derived:
    """Base of the derived columns: ``name`` computed from the raw columns ``inputs``."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]

    def polars_expr(self) -> pl.Expr:
        """The column (aliased to :attr:`name`) from ``ts`` as a UTC datetime."""
        raise NotImplementedError

    def numpy(self, columns: MutableMapping[str, Column]) -> Column:
        """The column from ``ts`` as epoch ms, equal to :meth:`polars_expr` (may add intermediate
        columns to ``columns``, e.g. the local time hour and weekday share)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LocalClock(Derived):
    """Base of the columns read off the local wall clock of ``ts`` in ``time_zone``."""

    time_zone: str
    inputs: ClassVar[tuple[str, ...]] = ("ts",)

    @cached_property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def local_expr(self) -> pl.Expr:
        return pl.col("ts").dt.convert_time_zone(self.time_zone)

    def local_ms(self, columns: MutableMapping[str, Column]) -> np.ndarray:
        """``ts`` on the local clock (epoch ms), computed once per set of columns."""
        key = f"_local_ts[{self.time_zone}]"
        if key not in columns:
            columns[key] = Column(local_time(columns["ts"].values, self.zone))
        return columns[key].values


@dataclass(frozen=True)
class Hour(LocalClock):
    name: ClassVar[str] = HOUR

    def polars_expr(self) -> pl.Expr:
        return self.local_expr().dt.hour().cast(pl.Int64).alias(self.name)

    def numpy(self, columns: MutableMapping[str, Column]) -> Column:
        return Column((self.local_ms(columns) // HOUR_MS) % 24)


@dataclass(frozen=True)
class Weekday(LocalClock):
    name: ClassVar[str] = WEEKDAY

    def polars_expr(self) -> pl.Expr:
        return self.local_expr().dt.weekday().cast(pl.Int64).alias(self.name)

    def numpy(self, columns: MutableMapping[str, Column]) -> Column:  # 1970-01-01 was a Thursday (4)
        return Column((self.local_ms(columns) // DAY_MS + 3) % 7 + 1)


@dataclass(frozen=True)
class ItemAge(Derived):
    name: ClassVar[str] = ITEM_AGE
    inputs: ClassVar[tuple[str, ...]] = ("ts", ITEM_UPLOAD)

    def polars_expr(self) -> pl.Expr:
        age = (pl.col("ts") - pl.col(ITEM_UPLOAD)).dt.total_milliseconds() / DAY_MS
        return age.clip(lower_bound=0.0).alias(self.name)

    def numpy(self, columns: MutableMapping[str, Column]) -> Column:
        ts, upload = columns["ts"], columns[ITEM_UPLOAD]
        age = (ts.values - upload.values).astype(np.float64) / DAY_MS
        return Column(np.maximum(age, 0.0), Column.valid_of(ts, upload))


def derived_columns(names: Iterable[str], time_zone: str) -> tuple[Derived, ...]:
    """The derived columns a FeatureSpec lists (``extras["derived"]``), in that order."""
    names = list(names)
    known: dict[str, Derived] = {HOUR: Hour(time_zone), WEEKDAY: Weekday(time_zone), ITEM_AGE: ItemAge()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SpecError(
            f"FeatureSpec extras.derived: unknown derived column {unknown[0]!r} (known: {', '.join(known)})"
        )
    return tuple(known[n] for n in names)


__all__ = ["DAY_MS", "HOUR", "ITEM_AGE", "ITEM_UPLOAD", "WEEKDAY", "Derived", "derived_columns", "local_time"]
