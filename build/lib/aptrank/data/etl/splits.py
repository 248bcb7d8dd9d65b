"""Time splits: train < valid_start <= valid < test_start <= test.

Boundaries come from the config (dates or datetimes in its time zone, e.g. KuaiRand: valid =
2022-04-29, test = 2022-04-30 in Asia/Shanghai days) or, without them, from event-time quantiles:
``valid_start`` is the timestamp of the accepted event at position floor(n * (1 - valid_fraction -
test_fraction)) in time order, ``test_start`` the one at floor(n * (1 - test_fraction)). Events that
share a boundary timestamp go to the later split together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from aptrank.data.etl.config import EtlConfig, iso_utc

SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT = "_split"
"""Int8 split code column in the ETL's working frames: index into :data:`SPLITS`."""


@dataclass(frozen=True)
class Boundaries:
    valid_start: dt.datetime
    test_start: dt.datetime

    def to_dict(self) -> dict[str, str]:
        return {"valid_start": iso_utc(self.valid_start), "test_start": iso_utc(self.test_start)}


def resolve_boundaries(cfg: EtlConfig, sorted_ts: pl.Series) -> Boundaries:
    """Split boundaries (aware UTC) from the config, or from quantiles of ``sorted_ts`` (ascending)."""
    s = cfg.splits
    if s.valid_start is not None and s.test_start is not None:
        return Boundaries(cfg.local_time(s.valid_start), cfg.local_time(s.test_start))
    n = len(sorted_ts)
    if n == 0:
        raise ValueError("no accepted events: cannot place split boundaries by fraction")

    def at(fraction: float) -> dt.datetime:
        i = min(int(n * fraction), n - 1)
        value = sorted_ts[i]
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)

    test = at(1 - s.test_fraction) if s.test_fraction > 0 else _after(sorted_ts[n - 1])
    valid = at(1 - s.valid_fraction - s.test_fraction) if s.valid_fraction > 0 else test
    return Boundaries(valid, test)


def split_expr(b: Boundaries) -> pl.Expr:
    """Int8 split code of each row from its ``ts``."""
    ts = pl.col("ts")
    valid = pl.lit(b.valid_start).dt.cast_time_unit("ms")
    test = pl.lit(b.test_start).dt.cast_time_unit("ms")
    return pl.when(ts >= test).then(2).when(ts >= valid).then(1).otherwise(0).cast(pl.Int8).alias(SPLIT)


def _after(value: dt.datetime) -> dt.datetime:
    aware = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware + dt.timedelta(milliseconds=1)
