"""Feature freshness (issue #19): when each example's entity features are looked at.

``exact`` (the default): every entity feature of an impression at time t is computed from the
events strictly before t (point in time, :mod:`data.etl.pit`): what the model would see if the
feature store were updated after every event.

``daily``: every entity feature of an impression on day D (a calendar day of the config's
``time_zone``, the day boundary the ETL already uses for its 1d windows, splits and daily runs,
:func:`data.etl.daily.day_bounds`) is computed from the events strictly before the start of day D:
exactly what a feature snapshot built at the end of day D - 1 serves all through day D
(Bernardi et al., "150 Successful Machine Learning Models: 6 Lessons Learned at Booking.com",
KDD 2019, and Sculley et al., "Hidden Technical Debt in Machine Learning Systems", NeurIPS 2015,
on training/serving skew: train on the features serving will see). Per feature family:

* **window aggregates** (``<entity>_<window>_count``, ``<entity>_<window>_<task>_rate`` of user,
  item and author): the window ``[D0 - w, D0)`` instead of ``[t - w, t)``, with D0 the start of
  day D: the snapshot's windows end at its cutoff, and the daily snapshot's cutoff is D0;
* **history lists** (``user_clicked_items`` ...): the user's last ``max_len`` positives before D0;
* **request-time features** stay exact in both modes, because serving computes them from the
  request itself and not from the snapshot: ``hour``, ``weekday`` and ``item_age_days`` (request
  ts minus the item's upload time: the upload time is a static item attribute), and the context
  columns;
* **side attributes** (user and item tables) are static: the same in both modes.

The snapshot (``DIR/snapshot/``) is the same pass's query rows at the cutoff. With ``daily`` the
cutoff is the start of the day after the last accepted event (:func:`snapshot_cutoff`; ``exact``:
the last event + 1 ms), so the snapshot of an ETL whose events end on day D - 1 holds exactly the
features of the day-D examples, and serving it on day D reproduces them (tested in
``tests/data/test_etl_freshness.py``).

Implementation: one query time per row (:func:`day_floor_ms`) handed to the point-in-time index
(:class:`data.etl.pit.KeyTimeIndex`, ``day_zone``); the rest of the code (counts, histories, the
snapshot, the daily increments and the Spark engine) is unchanged. The FeatureSpec records
``extras.freshness = "daily"`` (absent for ``exact``, so an exact spec keeps its bytes and hash):
a model trained on one is never fed the other silently (its spec hash differs).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any, Literal

import numpy as np

Freshness = Literal["exact", "daily"]
EXACT: Freshness = "exact"
DAILY: Freshness = "daily"
SPEC_KEY = "freshness"
"""The FeatureSpec extras key (only written for ``daily``)."""
ONE_MS = dt.timedelta(milliseconds=1)


def day_start(day: dt.date, time_zone: str) -> dt.datetime:
    """Midnight starting ``day`` in ``time_zone``, as an aware UTC datetime."""
    return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(time_zone)).astimezone(dt.UTC)


def local_day(value: dt.datetime, time_zone: str) -> dt.date:
    """The calendar day of an instant (aware, or naive = UTC) in ``time_zone``."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(zoneinfo.ZoneInfo(time_zone)).date()


def _epoch_ms(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // ONE_MS


def day_floor_ms(ts_ms: np.ndarray, time_zone: str) -> np.ndarray:
    """Per epoch-millisecond timestamp, the start of its calendar day in ``time_zone`` (epoch ms).
    The boundaries of the days spanned are computed once (:func:`day_start`) and each timestamp finds
    its day by one binary search."""
    if not len(ts_ms):
        return np.zeros(0, dtype=np.int64)
    first, last = (
        local_day(dt.datetime.fromtimestamp(int(v) // 1000, dt.UTC), time_zone) for v in (ts_ms.min(), ts_ms.max())
    )
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 2)]
    starts = np.array([_epoch_ms(day_start(d, time_zone)) for d in days], dtype=np.int64)
    return starts[np.searchsorted(starts, ts_ms, side="right") - 1]


def snapshot_cutoff(last_event: dt.datetime, freshness: Freshness, time_zone: str) -> dt.datetime:
    """Where the snapshot's windows end: ``exact``: the last accepted event + 1 ms; ``daily``: the
    start of the day after the last event's day (the end of the last day of data)."""
    if freshness == EXACT:
        return last_event + ONE_MS
    return day_start(local_day(last_event, time_zone) + dt.timedelta(days=1), time_zone)


def spec_extras(freshness: Freshness) -> dict[str, Any]:
    """The FeatureSpec extras entry: ``{"freshness": "daily"}``, nothing for ``exact``."""
    return {} if freshness == EXACT else {SPEC_KEY: freshness}


def spec_freshness(extras: dict[str, Any]) -> Freshness:
    """The freshness a FeatureSpec's extras record (``exact`` when absent)."""
    return extras.get(SPEC_KEY, EXACT)  # type: ignore[no-any-return]


__all__ = [
    "DAILY",
    "EXACT",
    "Freshness",
    "day_floor_ms",
    "day_start",
    "local_day",
    "snapshot_cutoff",
    "spec_extras",
    "spec_freshness",
]
