"""The versioned running state of the incremental daily ETL (``aptrank etl --date``, :mod:`data.etl.daily`).

The point-in-time features of an event at time t are sums over the same key's earlier events in
``[t - w, t)`` (``all``: every earlier event) and the user's last ``max_len`` positives. A day's
events and the snapshot are queried at t >= the previous cutoff (last accepted event + 1 ms; with
``freshness: daily`` they are queried at the start of the day, which is that cutoff,
:mod:`data.etl.freshness`), so of the past they need exactly, per entity (user, item, author):

* **retained events**: every accepted event at or after ``cutoff - longest finite window`` (the
  rows any sliding window can still reach) with its key, ``ts`` and labels, and for the user also
  the encoded item id and, per history, the user's last ``max_len`` positives (the rows a history
  list can still reach), **in (key, ts, input row) order** (:func:`entity_rows`), so that a day searches
  them (:mod:`data.etl.prior`) and merges its own rows in (:func:`add_day`) instead of sorting;
* **carry** (running totals): per key, the count and the label sums of every other accepted event
  of that entity. No window but ``all`` reaches them, so the carry adds to the ``all`` window only.

The day's queries then get, through the same point-in-time code (:class:`data.etl.pit.KeyTimeIndex`
over the day's rows with a :class:`data.etl.prior.StatePrior`, or, for engines that want rows,
:func:`data.etl.prior.prior_rows` in front of them), the same numbers as a full recompute over the whole history
(tested in ``tests/data/test_etl_daily.py``). Size: the events of the longest window (7 days of
events for a 7-day window) plus the users' older last positives plus one carry row per key: it
grows with the daily volume and the window, not with the history.

Layout: ``STATE_ROOT/<YYYY-MM-DD>/`` holds ``state.json`` (format version, day, cutoff, the config
key, the hash of the FeatureSpec written that day and of its vocabulary files), that
``feature_spec.json``, ``retained_<entity>.arrow``, ``carry_<entity>.arrow`` and
``keys_<entity>.arrow`` (the snapshot's sorted distinct keys, so that a day adds its keys without
rereading every event; uncompressed Arrow IPC, memory-mapped when read: the state is rewritten every
day at memory speed). A state is used only by the next day's run with the same config and
vocabularies; anything else is refused with a :class:`StateError` that says how to backfill.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from aptrank.data.encodings import Encoding
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig, iso_utc, window_ms
from aptrank.data.etl.history import ITEM_INDEX
from aptrank.data.etl.labels import label_column
from aptrank.data.etl.pit import THREADS, WEIGHT
from aptrank.data.spec import FeatureSpec

STATE_VERSION = 4
"""4: the user's retained rows carry the encoded item id (:data:`data.etl.history.ITEM_INDEX`; the
vocabularies are fixed by the bootstrap) instead of the raw one; 3: retained rows per entity in
(key, ts) order; 2: one retained file in ts order, uncompressed Arrow IPC and the key lists; 1:
Parquet, no key lists."""
STATE_FILE = "state.json"
SPEC_FILE = "feature_spec.json"
KEEP_STATES = 2
STAGING_PREFIX = ".staging-"
"""A state being written (:func:`staging_folder`); never read, replaced by the next run of its day."""
"""States kept per output: the newest (for tomorrow) and the one before it (to rerun the last day)."""


class StateError(ValueError):
    """A state that cannot be used for the requested day (other config or spec, a gap, a missing
    bootstrap); the message says what to run instead. The CLI exits with 2."""


def carry_file(entity: str) -> str:
    return f"carry_{entity}.arrow"


def retained_file(entity: str) -> str:
    return f"retained_{entity}.arrow"


def keys_file(entity: str) -> str:
    return f"keys_{entity}.arrow"


def config_key(cfg: EtlConfig) -> str:
    """sha256 over every config section that shapes the examples (all but ``time_range``, the
    ``validation`` gates and the ``engine``): a state built under another key describes other features."""
    body = cfg.model_dump(mode="json", exclude={"time_range", "validation", "engine"})
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def longest_window_ms(cfg: EtlConfig) -> int:
    return max((ms for ms in map(window_ms, cfg.features.windows) if ms is not None), default=0)


def present_entities(columns: list[str]) -> dict[str, str]:
    """Entity -> key column, for the entity keys the accepted events carry."""
    return {e: k for e, k in ENTITY_KEYS.items() if k in columns}


def _write_uncompressed(frame: pl.DataFrame, path: Path) -> None:
    frame.write_ipc(path, compression="uncompressed")


def staging_folder(root: Path, day: dt.date) -> Path:
    """An empty ``root/.staging-<day>/``: where the state of ``day`` is written before it is renamed
    into place (:meth:`DayState.commit`)."""
    folder = root / f"{STAGING_PREFIX}{day.isoformat()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def write_frames(
    folder: Path, retained: dict[str, pl.DataFrame], carry: dict[str, pl.DataFrame], keys: dict[str, pl.DataFrame]
) -> Path:
    """A state's retained rows, carry and key lists into ``folder`` (uncompressed Arrow IPC)."""
    files = [(frame, folder / carry_file(e)) for e, frame in carry.items()]
    files += [(frame, folder / retained_file(e)) for e, frame in retained.items()]
    files += [(frame, folder / keys_file(e)) for e, frame in keys.items()]
    with ThreadPoolExecutor(THREADS) as pool:  # Polars writes without the GIL
        list(pool.map(_write_uncompressed, *zip(*files, strict=True)))
    return folder


@dataclass
class DayState:
    day: dt.date
    cutoff: dt.datetime
    """The snapshot cutoff of ``day`` (aware UTC): its last accepted event + 1 ms, or with daily
    freshness the end of that event's day (:func:`data.etl.freshness.snapshot_cutoff`)."""
    config_key: str
    spec: FeatureSpec
    """The FeatureSpec written that day (its vocabulary files are checked by ``vocab_hash``)."""
    vocab_hash: str
    retained: dict[str, pl.DataFrame]
    """Per entity: its retained rows (:func:`entity_rows`), in (key, ts, input row) order."""
    carry: dict[str, pl.DataFrame]
    keys: dict[str, pl.DataFrame]
    """Per entity of the snapshot: its sorted distinct keys that day (the next day adds its own)."""

    def write(self, root: Path) -> Path:
        """Write to ``root/<day>/`` (replacing it) and drop all but the newest :data:`KEEP_STATES`."""
        return self.commit(root, write_frames(staging_folder(root, self.day), self.retained, self.carry, self.keys))

    def commit(self, root: Path, staged: Path) -> Path:
        """Complete ``staged`` (the frames of this state, :func:`write_frames`) with the FeatureSpec and
        ``state.json``, rename it onto ``root/<day>/`` and drop all but the newest :data:`KEEP_STATES`.
        ``state.json`` is written last and the rename is atomic: a run killed before has no state of
        its day (:func:`state_days` ignores the staging folder)."""
        self.spec.write(staged / SPEC_FILE)
        meta = {
            "version": STATE_VERSION,
            "day": self.day.isoformat(),
            "cutoff": iso_utc(self.cutoff),
            "config_key": self.config_key,
            "feature_spec_hash": self.spec.hash,
            "vocab_hash": self.vocab_hash,
            "entities": sorted(self.carry),
            "key_lists": sorted(self.keys),
        }
        (staged / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        folder = root / self.day.isoformat()
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)
        for old in state_days(root)[:-KEEP_STATES]:
            shutil.rmtree(root / old.isoformat())
        return folder

    @classmethod
    def read(cls, folder: Path) -> DayState:
        try:
            meta = json.loads((folder / STATE_FILE).read_text())
            version, day = meta.get("version"), dt.date.fromisoformat(meta["day"])
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise _unreadable(folder / STATE_FILE, folder, err) from err
        if version != STATE_VERSION:
            raise StateError(
                f"{folder / STATE_FILE}: state format version {version} is not {STATE_VERSION}; "
                "rebuild the state with a full run (aptrank etl --date <first day> --bootstrap ...)"
            )

        def frames(name: Callable[[str], str], entities: str) -> dict[str, pl.DataFrame]:
            out = {}
            for e in meta[entities]:
                try:  # a truncated or damaged file fails here (Arrow IPC footer and schema checks)
                    out[e] = pl.read_ipc(folder / name(e), memory_map=True)
                except (OSError, pl.exceptions.PolarsError) as err:
                    raise _unreadable(folder / name(e), folder, err) from err
            return out

        return cls(
            day,
            dt.datetime.fromisoformat(meta["cutoff"].replace("Z", "+00:00")),
            meta["config_key"],
            FeatureSpec.read(folder / SPEC_FILE),
            meta["vocab_hash"],
            frames(retained_file, "entities"),
            frames(carry_file, "entities"),
            frames(keys_file, "key_lists"),
        )


def _unreadable(path: Path, folder: Path, err: Exception) -> StateError:
    """The error for a damaged state file: where, why, and how to rebuild that day's state."""
    day, reason = folder.name, (str(err).splitlines() or [""])[0]
    return StateError(
        f"{path}: the daily state is unreadable ({type(err).__name__}: {reason}); "
        f"rebuild it by rerunning its day from the state before it (aptrank etl --date {day} ...) "
        "or with a full run (--bootstrap)"
    )


def state_days(root: Path) -> list[dt.date]:
    """Days that have a state under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(
        dt.date.fromisoformat(p.name)
        for p in root.iterdir()
        if not p.name.startswith(STAGING_PREFIX) and (p / STATE_FILE).is_file()
    )


def state_for(root: Path, day: dt.date, cfg: EtlConfig) -> DayState:
    """The state of ``day - 1``, checked against ``cfg``; :class:`StateError` with a backfill hint
    when there is none (no state at all, or a gap) or it was built from another config."""
    previous = day - dt.timedelta(days=1)
    folder = root / previous.isoformat()
    days = state_days(root)
    if not days:
        raise StateError(
            f"{root}: no daily state yet; bootstrap it with a full run through the day before: "
            f"aptrank etl --date {previous} --bootstrap ... (then --date {day})"
        )
    if not (folder / STATE_FILE).is_file():
        last = days[-1]
        hint = (
            f"backfill the gap: aptrank etl --date {last + dt.timedelta(days=1)} --until {day} ..."
            if last < previous
            else f"the state is already at {last}; rerun from {days[0] + dt.timedelta(days=1)} at the earliest "
            f"(aptrank etl --date {days[0] + dt.timedelta(days=1)} --until {last} ...) or bootstrap again"
        )
        raise StateError(f"{root}: no state for {previous} (the day before {day}; states: {days}); {hint}")
    state = DayState.read(folder)
    if state.config_key != config_key(cfg):
        raise StateError(
            f"{folder}: the state was built with another ETL config (features, tasks, splits or output differ); "
            f"its FeatureSpec {state.spec.hash[:12]} no longer applies: rebuild with a full run "
            f"(aptrank etl --date {previous} --bootstrap ...) and backfill from there"
        )
    return state


def entity_rows(
    events: pl.DataFrame | pl.LazyFrame, entity: str, cfg: EtlConfig, item: Encoding | None = None
) -> pl.DataFrame:
    """The retained-row columns of ``entity`` (its key, ``ts``, labels, and for the user's history
    lists the item id encoded by ``item``, :data:`ITEM_INDEX`, so that no day encodes the state
    again) of ``events`` (in (ts, input row) order), null keys dropped (they count for no key), in
    (key, ts, input row) order: a stable sort by key."""
    key = ENTITY_KEYS[entity]
    columns = [pl.col(key), pl.col("ts"), *[pl.col(label_column(t)) for t in cfg.task_names]]
    if entity == "user" and cfg.features.history:
        if item is None:
            raise ValueError("entity_rows: the user's rows of a config with history lists need the item encoding")
        columns.append(item.polars_expr(pl.col("item_id")).alias(ITEM_INDEX))
    rows = events.lazy().select(columns).filter(pl.col(key).is_not_null())
    return rows.sort(key, maintain_order=True).collect()


def add_day(retained: pl.DataFrame, day: pl.DataFrame, key: str) -> pl.DataFrame:
    """``retained`` and the day's rows (both in (key, ts) order, every day row later than every
    retained row) in (key, ts) order: a linear merge, yesterday's rows first within a key."""
    return retained.merge_sorted(day.cast(dict(retained.schema)), key)  # type: ignore[arg-type]


def fold(
    rows: dict[str, pl.DataFrame], carry: dict[str, pl.DataFrame], cutoff: dt.datetime, cfg: EtlConfig
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """The next state's retained rows and carry per entity: ``rows[entity]`` (the previous retained
    rows and the day's accepted events of that entity, in (key, ts, input row) order, see
    :func:`entity_rows`) split into what the next day's queries can still reach (every row at or
    after ``cutoff - longest window``; for the user, also the last ``max_len`` positives per history)
    and running totals per key of the rest, added to ``carry``. Everything stays in key order, so the
    next day merges instead of sorting."""
    labels = [label_column(t) for t in cfg.task_names]
    floor = pl.Series([cutoff - dt.timedelta(milliseconds=longest_window_ms(cfg))]).dt.cast_time_unit("ms")[0]
    retained, out = {}, {}
    for entity, frame in rows.items():
        key = ENTITY_KEYS[entity]
        old = (frame["ts"] < floor).to_numpy()
        leaving = old.copy()
        if entity == "user" and old.any():  # the users' last positives stay rows: a history list can reach them
            recent = frame.select("user_id", *labels).filter(~old)  # only their later positives are counted
            earlier, positions = frame.filter(old), np.flatnonzero(old)
            for h in cfg.features.history:
                leaving[positions[last_positives(earlier, recent, label_column(h.task), h.max_len).to_numpy()]] = False
        mask = pl.Series(leaving)
        # no row leaving (a day within the longest window of the first): the rows as they are, not a copy
        retained[entity] = frame.filter(~mask)
        folded = (
            frame.filter(mask)
            .group_by(key)
            .agg(pl.len().alias(WEIGHT), *[pl.col(c).cast(pl.UInt32).sum() for c in labels])
        )
        parts = [p for p in (carry.get(entity), folded) if p is not None]
        total = pl.concat([p.select(key, *[pl.col(c).cast(pl.UInt32) for c in (WEIGHT, *labels)]) for p in parts])
        out[entity] = total.group_by(key).agg(pl.all().sum().cast(pl.UInt32)).sort(key)
    return retained, out


def last_positives(earlier: pl.DataFrame, recent: pl.DataFrame, label: str, max_len: int) -> pl.Series:
    """Rows of ``earlier`` (positions) that are among their user's last ``max_len`` positives of
    ``label`` over ``earlier`` followed by ``recent``: the rows a history list can still reach. Only
    the positives of ``earlier`` and the count of their users' positives in ``recent`` are read."""
    mine = earlier.with_row_index("_row").filter(pl.col(label) == 1).select("_row", "user_id")
    later = (
        recent.filter((pl.col(label) == 1) & pl.col("user_id").is_in(mine["user_id"].unique().implode()))
        .group_by("user_id")
        .agg(pl.len().cast(pl.UInt32).alias("_later"))
    )
    after = pl.col("_row").cum_count(reverse=True).over("user_id") + pl.col("_later").fill_null(0)
    ranked = mine.join(later, on="user_id", how="left", maintain_order="left")
    return ranked.filter(after <= max_len)["_row"]
