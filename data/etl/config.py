"""Typed configuration of ``aptrank etl``, loaded from YAML (``configs/etl/*.yaml``).

Every section is a frozen typed model (:mod:`aptrank.config_model`); :func:`config_from_dict` parses
them once and rejects unknown keys, wrong types and broken rules with a :class:`EtlConfigError` that
names the file and the dotted key (e.g. ``configs/etl/x.yaml: features.windows[1]: '3x' is not a
window``).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from aptrank.config_model import AsTuple, ConfigModel, DateText, read_yaml_mapping
from aptrank.data.etl.freshness import EXACT, Freshness
from aptrank.data.spec import DEFAULT_TASKS, TaskLabel
from aptrank.errors import ConfigError

ENTITY_KEYS: dict[str, str] = {"user": "user_id", "item": "item_id", "author": "author_id"}
"""Entities that get point-in-time aggregates, and the event column that identifies each."""

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
ALL_PRIOR = "all"


class EtlConfigError(ConfigError):
    """An ETL config value breaks its rule (the message names the file and the dotted key), or the
    input contradicts the config (then the message names the file and the column)."""

    def __init__(self, key_or_message: str, reason: str | None = None, source: str | None = None) -> None:
        if reason is None:  # a whole message: input that contradicts the config
            key_or_message, reason = "", key_or_message
        super().__init__(key_or_message, reason, source)


class EtlSection(ConfigModel):
    """A section of the ETL config: refused with :class:`EtlConfigError`."""

    error_class = EtlConfigError


Names = Annotated[tuple[str, ...], AsTuple]


def iso_utc(value: dt.datetime) -> str:
    """``2022-04-28T16:00:00.000Z``: how the ETL writes instants (summary, FeatureSpec)."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_ms(window: str) -> int | None:
    """Length of a window such as ``"1d"``, ``"12h"``, ``"7d"`` in milliseconds; ``"all"`` -> None."""
    if window == ALL_PRIOR:
        return None
    m = _DURATION.match(window)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"'{window}' is not a window: use <positive int><ms|s|m|h|d|w> or 'all'")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class TimeRange(EtlSection):
    """Accepted event times ``[start, end)``, dates or ISO datetimes read in the config's time zone;
    ``None`` = unbounded. Events outside are rejected (``ts_out_of_range``)."""

    start: DateText | None = None
    end: DateText | None = None


class ValidationConfig(EtlSection):
    require_item_metadata: bool = True
    """Reject events whose item is not in the items table (``unknown_item``)."""
    max_reject_rate: float = 0.01
    """Fail (exit 2) when validity rejects (every reason but duplicates) exceed this share of input."""
    max_duplicate_rate: float = 0.05
    """Fail (exit 2) when duplicate impressions exceed this share of input."""
    plausible_after: DateText = "2000-01-01"
    """Reject events before this date/datetime (config time zone) as ``implausible_ts``."""
    max_future_skew_hours: float = 24.0
    """Reject events later than the run's clock plus this many hours as ``implausible_ts``."""


class SplitConfig(EtlSection):
    """Time split. With ``valid_start`` and ``test_start`` (dates/datetimes in the config time zone):
    train < valid_start <= valid < test_start <= test. Without them, boundaries are the event-time
    quantiles that leave ``valid_fraction`` and ``test_fraction`` of accepted events to the last two."""

    valid_start: DateText | None = None
    test_start: DateText | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


class HistoryConfig(EtlSection):
    """The user's last ``max_len`` items whose ``task`` label is 1 (most recent first)."""

    name: str
    task: str
    max_len: int = 20


class EncodingConfig(EtlSection):
    """How a categorical column becomes an index: train-split vocabulary (values seen at least
    ``min_count`` times, most frequent first) or a stable hash into ``buckets`` rows (row 0 = OOV)."""

    kind: Literal["vocab", "hash"] = "vocab"
    min_count: int = 1
    buckets: int | None = None


class AttributeConfig(EtlSection):
    """Side attributes of a table: categorical columns, dense columns and which dense ones get log1p."""

    categorical: Names = ()
    dense: Names = ()
    log1p: Names = ()


class FeatureConfig(EtlSection):
    windows: Names = ("1d", "7d", ALL_PRIOR)
    entities: Names = ("user", "item", "author")
    smoothing: float = 20.0
    """``a`` in the smoothed rate (positives + a * prior) / (count + a)."""
    history: Annotated[tuple[HistoryConfig, ...], AsTuple] = (
        HistoryConfig(name="user_clicked_items", task="click"),
        HistoryConfig(name="user_liked_items", task="like"),
    )
    context: Names = ()
    user_attributes: AttributeConfig = Field(default_factory=AttributeConfig)
    item_attributes: AttributeConfig = Field(default_factory=AttributeConfig)
    encodings: dict[str, EncodingConfig] = Field(default_factory=dict)
    """Per categorical feature (by name); unlisted ones use a vocabulary with min_count 1."""
    duration_buckets_s: Annotated[tuple[float, ...], AsTuple] = (5, 10, 15, 30, 60, 120, 300, 600)
    item_age: bool = True
    inline_vocab_max: int = 64
    """Vocabularies up to this size are stored inline in the FeatureSpec, larger ones under vocab/."""


class OutputConfig(EtlSection):
    chunk_rows: int = 131_072
    """Rows the ETL encodes and writes at a time (one Parquet row group of the examples)."""
    rows_per_file: int = 4_194_304
    """A split's examples roll over to a new ``part-NNNNN.parquet`` after this many rows."""
    row_group_size: int = 262_144
    """Row group size of the other Parquet outputs (rejects, vocabularies, snapshot)."""
    compression: Literal["zstd", "lz4", "snappy", "uncompressed"] = "zstd"
    compression_level: int | None = 1
    """zstd level (ignored by the other codecs)."""

    @property
    def level(self) -> int | None:
        return self.compression_level if self.compression == "zstd" else None


class EtlConfig(EtlSection):
    time_zone: str = "UTC"
    time_range: TimeRange = Field(default_factory=TimeRange)
    tasks: Annotated[tuple[TaskLabel, ...], AsTuple] = DEFAULT_TASKS
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    freshness: Freshness = EXACT
    """When entity features are looked at (:mod:`data.etl.freshness`): ``exact`` = strictly before each
    impression; ``daily`` = as of the start of the impression's day (``time_zone``), what a snapshot
    built at the end of the day before serves."""
    engine: Literal["polars", "spark"] = "polars"
    """Where the point-in-time features run: this process (Polars) or Spark (``data/etl/spark.py``)."""

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def local_time(self, value: str) -> dt.datetime:
        """A config date/datetime string as an aware UTC datetime (read in ``time_zone``)."""
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zoneinfo.ZoneInfo(self.time_zone))
        return parsed.astimezone(dt.UTC)


def load_config(path: str | Path) -> EtlConfig:
    """Read and check an ETL config YAML file."""
    return config_from_dict(read_yaml_mapping(path, "ETL config", EtlConfigError), str(Path(path)))


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> EtlConfig:
    """Build an :class:`EtlConfig` from plain data; unknown keys and broken rules raise."""
    cfg = EtlConfig.parse(data, source)
    _check(cfg, source)
    return cfg


# ---- rules ------------------------------------------------------------------------------------
def _check(cfg: EtlConfig, source: str) -> None:
    def fail(key: str, rule: str) -> None:
        raise EtlConfigError(key, rule, source)

    try:
        zoneinfo.ZoneInfo(cfg.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        fail("time_zone", f"'{cfg.time_zone}' is not an IANA time zone (e.g. UTC, Asia/Shanghai)")
    times = {
        "time_range.start": cfg.time_range.start,
        "time_range.end": cfg.time_range.end,
        "splits.valid_start": cfg.splits.valid_start,
        "splits.test_start": cfg.splits.test_start,
        "validation.plausible_after": cfg.validation.plausible_after,
    }
    for key, value in times.items():
        if value is not None:
            try:
                cfg.local_time(value)
            except ValueError:
                fail(key, f"'{value}' is not a date (YYYY-MM-DD) or ISO datetime")
    r = cfg.time_range
    if r.start and r.end and cfg.local_time(r.start) >= cfg.local_time(r.end):
        fail("time_range", "start must be before end")
    names = cfg.task_names
    if not names or len(set(names)) != len(names):
        fail("tasks", f"need at least one task and unique names, got {names}")
    for i, t in enumerate(cfg.tasks):
        if t.kind == "binary_column" and not t.column:
            fail(f"tasks[{i}].column", f"task '{t.name}' is binary_column and needs the event column to read")
        if t.kind == "watch_ratio" and not (t.min_ratio and 0 < t.min_ratio <= 10):
            fail(f"tasks[{i}].min_ratio", f"task '{t.name}' is watch_ratio and needs 0 < min_ratio <= 10")
    s = cfg.splits
    if (s.valid_start is None) != (s.test_start is None):
        fail("splits", "give both valid_start and test_start, or neither (fractions)")
    if s.valid_start and s.test_start and cfg.local_time(s.valid_start) >= cfg.local_time(s.test_start):
        fail("splits", "valid_start must be before test_start")
    if not (0 <= s.valid_fraction < 1 and 0 <= s.test_fraction < 1 and s.valid_fraction + s.test_fraction < 1):
        fail("splits", "valid_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    v = cfg.validation
    for key in ("max_reject_rate", "max_duplicate_rate"):
        if not 0 <= getattr(v, key) <= 1:
            fail(f"validation.{key}", "must be in [0, 1]")
    if not 0 <= v.max_future_skew_hours < float("inf"):
        fail("validation.max_future_skew_hours", "must be a finite number of hours >= 0")
    _check_features(cfg.features, names, fail)
    o = cfg.output
    if min(o.row_group_size, o.chunk_rows, o.rows_per_file) < 1:
        fail("output", "row_group_size, chunk_rows and rows_per_file must be >= 1")


def _check_features(f: FeatureConfig, tasks: list[str], fail: Any) -> None:
    if not f.windows or len(set(f.windows)) != len(f.windows):
        fail("features.windows", f"need at least one window and no repeats, got {list(f.windows)}")
    for i, w in enumerate(f.windows):
        try:
            window_ms(w)
        except ValueError as e:
            fail(f"features.windows[{i}]", str(e))
    for i, e in enumerate(f.entities):
        if e not in ENTITY_KEYS:
            fail(f"features.entities[{i}]", f"'{e}' is not one of {', '.join(ENTITY_KEYS)}")
    if f.smoothing <= 0:
        fail("features.smoothing", "must be > 0")
    for i, h in enumerate(f.history):
        if h.task not in tasks:
            fail(f"features.history[{i}].task", f"'{h.task}' is not a configured task ({', '.join(tasks)})")
        if h.max_len < 1:
            fail(f"features.history[{i}].max_len", "must be >= 1")
    for name, enc in f.encodings.items():
        if enc.kind == "hash" and (enc.buckets is None or enc.buckets < 2):
            fail(f"features.encodings.{name}.buckets", "hash encoding needs buckets >= 2")
        if enc.min_count < 1:
            fail(f"features.encodings.{name}.min_count", "must be >= 1")
    for table, attrs in (("user_attributes", f.user_attributes), ("item_attributes", f.item_attributes)):
        stray = sorted(set(attrs.log1p) - set(attrs.dense))
        if stray:
            fail(f"features.{table}.log1p", f"{stray} are not listed under dense")
    columns = [
        *f.context,
        *f.user_attributes.categorical,
        *f.user_attributes.dense,
        *f.item_attributes.categorical,
        *f.item_attributes.dense,
    ]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        fail("features", f"columns listed twice across context/user_attributes/item_attributes: {dupes}")
    if list(f.duration_buckets_s) != sorted(set(f.duration_buckets_s)):
        fail("features.duration_buckets_s", "must be strictly increasing")
    if f.inline_vocab_max < 0:
        fail("features.inline_vocab_max", "must be >= 0")
