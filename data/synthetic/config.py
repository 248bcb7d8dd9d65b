"""Parameters of the synthetic impression-log generator, validated in one place.

A typed model (:mod:`aptrank.config_model`): every field documents itself (its ``description``);
the ``aptrank generate`` command reads its option defaults and help texts from here, so this model
is the single source of truth. A wrong type or a broken rule raises :class:`ConfigError` naming
the parameter.
Default label rates follow the KuaiRand-Pure standard log (Gao et al., CIKM 2022): click 0.44,
like 0.017, finish (watch >= 95% of the duration) 0.16.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, model_validator

from aptrank.config_model import ConfigModel, DateText
from aptrank.errors import ConfigError

__all__ = ["MAX_EVENTS_PER_DAY", "ConfigError", "GeneratorConfig"]

MAX_EVENTS_PER_DAY = 21_600_000
"""Timestamps are strictly increasing within a day (ms resolution), so one day holds at most this
many events (one per 4 ms on average); see :mod:`data.synthetic.clock`."""


def _f(default: Any, help: str) -> Any:
    return Field(default, description=help)


class GeneratorConfig(ConfigModel):
    """Everything that determines a synthetic log: same config (seed included) -> same bytes."""

    users: int = _f(10_000, "number of users in the world")
    items: int = _f(5_000, "number of items (videos) in the world")
    events: int = _f(1_000_000, "total event rows written, injected bad rows included")
    days: int = _f(7, "number of days the log spans (one partition per day)")
    seed: int = _f(0, "random seed: same seed and parameters give byte-identical files")
    start: DateText = _f("2022-04-08", "first day of the log, YYYY-MM-DD (UTC)")
    task_correlation: float = _f(
        0.3,
        "correlation in [-1, 1] between the click and finish affinities (task conflict dial: "
        "negative = conflicting tasks); like sits between them, see --like-alignment",
    )
    like_alignment: float = _f(
        0.7,
        "in [0, 1]: weight of the mean click/finish direction in the like direction; "
        "corr(like, click) = corr(like, finish) = like_alignment * (1 + task_correlation) / 2",
    )
    click_rate: float = _f(0.44, "target mean click rate, in (0, 1)")
    like_rate: float = _f(0.017, "target mean like rate, in (0, 1)")
    finish_rate: float = _f(0.16, "target mean finish rate (watch_ms >= finish_ratio * duration_ms), in (0, 1)")
    finish_ratio: float = _f(0.95, "share of the duration that counts as finished, in (0, 1)")
    signal: float = _f(1.5, "logit scale of the user x item affinity (higher = more learnable labels), > 0")
    factors: int = _f(16, "latent dimension of user and item factors, >= 3")
    zipf: float = _f(0.8, "Zipf exponent of item popularity, >= 0 (0 = uniform)")
    activity_sigma: float = _f(1.0, "log-normal sigma of user activity (0 = all users equally active), >= 0")
    categories: int = _f(20, "number of item categories, >= 1")
    tabs: int = _f(5, "number of distinct values of the context column 'tab', >= 1")
    bad_rows: float = _f(0.0, "fraction in [0, 0.5] of rows that are malformed, split evenly over the kinds")
    truth: bool = _f(False, "also write the true probabilities p_click, p_like, p_finish as event columns")
    chunk_size: int = _f(
        500_000, "rows drawn and written at a time (one Parquet row group; injected duplicates come on top), >= 1"
    )
    rows_per_part: int = _f(
        4_000_000, "rows per Parquet part file before a day rolls to the next part (duplicates on top), >= chunk_size"
    )

    @model_validator(mode="after")
    def _rules(self) -> GeneratorConfig:
        for name in ("users", "items", "events", "days", "categories", "tabs", "chunk_size"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        _check(self.factors >= 3, "factors", self.factors, "must be >= 3 (three task directions)")
        _check(self.seed >= 0, "seed", self.seed, "must be >= 0")
        _check(self.rows_per_part >= self.chunk_size, "rows_per_part", self.rows_per_part, "must be >= chunk_size")
        _check(-1.0 <= self.task_correlation <= 1.0, "task_correlation", self.task_correlation, "must be in [-1, 1]")
        _check(0.0 <= self.like_alignment <= 1.0, "like_alignment", self.like_alignment, "must be in [0, 1]")
        for name in ("click_rate", "like_rate", "finish_rate", "finish_ratio"):
            value = getattr(self, name)
            _check(0.0 < value < 1.0, name, value, "must be in (0, 1)")
        _check(self.signal > 0, "signal", self.signal, "must be > 0")
        _check(self.zipf >= 0, "zipf", self.zipf, "must be >= 0")
        _check(self.activity_sigma >= 0, "activity_sigma", self.activity_sigma, "must be >= 0")
        _check(0.0 <= self.bad_rows <= 0.5, "bad_rows", self.bad_rows, "must be in [0, 0.5]")
        try:
            start = dt.date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise ConfigError("start", f"{self.start!r} is not a date of the form YYYY-MM-DD") from None
        _check(
            dt.date(2000, 1, 1) <= start and start + dt.timedelta(days=self.days) <= dt.date(2099, 1, 1),
            "start",
            self.start,
            "with days must keep the log within 2000-01-01 .. 2099-01-01 (bad rows use 1970 and 2100)",
        )
        per_day = -(-self.events // self.days)
        _check(
            per_day <= MAX_EVENTS_PER_DAY,
            "events",
            self.events,
            f"gives {per_day} events per day; at most {MAX_EVENTS_PER_DAY} per day (raise days)",
        )
        return self

    @property
    def start_date(self) -> dt.date:
        return dt.date.fromisoformat(self.start)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of parameter ``name``."""
        return cls.model_fields[name].default

    @classmethod
    def help(cls, name: str) -> str:
        """The documentation of parameter ``name``."""
        return str(cls.model_fields[name].description)


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(name, f"{value!r} {rule}")
