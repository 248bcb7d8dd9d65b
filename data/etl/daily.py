"""Incremental daily ETL: ``aptrank etl --date YYYY-MM-DD`` (issue #17).

One output folder grows day by day and always equals a full recompute over the whole history, row
for row and value for value (:func:`examples_digest` and the FeatureSpec hash agree; tested):

* **bootstrap** (``--bootstrap``, :mod:`data.etl.bootstrap`): the full ETL over the events up to
  the end of the day, plus the first state;
* **a day** reads the state of the day before and only the day's events (the rows of ``--input``
  whose ts falls on the day: a day partition or the whole log), validates them (rejects and summary
  under ``days/<day>/``), computes their point-in-time features with the same code as the full run
  over the day's rows, the state's share found by search (:meth:`DailyJob.prior_state`,
  :mod:`data.etl.prior`), adds the day's examples as
  ``<split>/part-<day>-NNNNN.parquet`` (name order = row order), replaces ``snapshot/`` and the
  FeatureSpec (only its snapshot cutoff moves), and commits the next state, built in a thread beside
  the snapshot and the examples (:meth:`DailyJob.stage_state`) in a staging folder renamed in place
  once the day is published.

Tried for issue #17's speed target and measured slower on the shared 2-core VM (see
``docs/scaling.md``): running a day's entity passes two at a time (point-in-time CPU 5.8 -> 8.9 s
at 10M events, no wall gained) and writing the state in one record batch per file.

A day without a state for the day before, or with a state from another config or FeatureSpec, is
refused (:class:`StateError`, exit 2) with the command that backfills. Rerunning the last day (or a
range ending at it) is allowed: its outputs and the later states are replaced. Rows with a null ts or
a ts outside ``time_range`` belong to no day: only a full run sees (and rejects) them.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.adapters import CanonicalTables, load_source
from aptrank.data.encodings import Encoding
from aptrank.data.etl.bootstrap import bootstrap
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig, EtlConfigError, HistoryConfig, iso_utc
from aptrank.data.etl.days import DAYS_DIR, STATE_DIR, check_daily_config, day_bounds, examples_digest, parse_utc
from aptrank.data.etl.engines import with_engine
from aptrank.data.etl.feature_encoder import FeatureEncoder
from aptrank.data.etl.features import plan_features
from aptrank.data.etl.freshness import snapshot_cutoff
from aptrank.data.etl.hugepages import numpy_hugepage_advice_off
from aptrank.data.etl.intake import Intake
from aptrank.data.etl.labels import duration_column
from aptrank.data.etl.pit import THREADS
from aptrank.data.etl.prior import StatePrior, state_prior
from aptrank.data.etl.run import REJECTS, SPEC_FILE, WORK, EtlResult, _Job, example_files
from aptrank.data.etl.splits import SPLITS
from aptrank.data.etl.state import (
    STAGING_PREFIX,
    DayState,
    StateError,
    add_day,
    entity_rows,
    fold,
    staging_folder,
    state_days,
    state_for,
    write_frames,
)
from aptrank.data.etl.summary import content_hash, write_summary
from aptrank.data.etl.tables import (
    SNAPSHOT_DIR,
    entity_keys,
    item_table,
    layout,
    user_table,
    write_snapshot,
)
from aptrank.data.etl.vocab import VOCAB_DIR
from aptrank.data.etl.workfiles import EVENTS, WorkFiles
from aptrank.data.spec import FeatureSpec


@numpy_hugepage_advice_off()
def run_day(
    source: str, input_path: str | Path, out: str | Path, cfg: EtlConfig, day: dt.date, say: Callable[[str], None]
) -> EtlResult:
    """One incremental day into the cumulative folder ``out`` (see the module docstring)."""
    root = Path(out)
    check_daily_config(cfg, day)
    state = state_for(root / STATE_DIR, day, cfg)
    if content_hash(root, (VOCAB_DIR,)) != state.vocab_hash:
        raise StateError(
            f"{root / VOCAB_DIR}: the vocabularies are not those of the FeatureSpec {state.spec.hash[:12]} the state "
            f"of {state.day} was built with; bootstrap again (aptrank etl --date {state.day} --bootstrap ...)"
        )
    if day_bounds(cfg, day)[0] < cfg.local_time(str(cfg.splits.valid_start)):
        raise StateError(f"{day} is in the train split (valid_start {cfg.splits.valid_start}): use --bootstrap")
    _drop_from(root, day)
    job = with_engine(DailyJob, cfg.engine)(cfg, root, say, state, state.spec, day)
    try:
        return job.run(load_source(source, input_path))
    finally:
        shutil.rmtree(job.out / WORK, ignore_errors=True)


def _drop_from(root: Path, day: dt.date) -> None:
    """Remove the outputs and states of ``day`` and every later day (a rerun or a backfill)."""
    for split in SPLITS:
        for part in (root / split).glob("part-????-??-??-*.parquet"):
            if dt.date.fromisoformat(part.name[5:15]) >= day:
                part.unlink()
    for sub in (DAYS_DIR, STATE_DIR):
        for folder in (root / sub).glob("????-??-??"):
            if dt.date.fromisoformat(folder.name) >= day:
                shutil.rmtree(folder)
    for staged in (root / STATE_DIR).glob(f"{STAGING_PREFIX}*"):  # a run killed before its state's commit
        shutil.rmtree(staged)


class DailyJob(_Job):
    """The ETL of one day on top of a :class:`DayState`; reuses the full job's stages."""

    def __init__(
        self, cfg: EtlConfig, root: Path, say: Callable[[str], None], state: DayState, spec: FeatureSpec, day: dt.date
    ) -> None:
        super().__init__(cfg, root / DAYS_DIR / day.isoformat(), say)
        self.root, self.state, self.spec, self.day = root, state, spec, day

    def prior_state(self, entity: str, item: Encoding, histories: Sequence[HistoryConfig]) -> StatePrior | None:
        return state_prior(self.state, entity, self.cfg, histories)

    def run(self, tables: CanonicalTables) -> EtlResult:
        start, end = day_bounds(self.cfg, self.day)
        lit = [pl.lit(t).dt.cast_time_unit("ms") for t in (start, end)]
        tables.events = tables.events.filter((pl.col("ts") >= lit[0]) & (pl.col("ts") < lit[1]))
        shutil.rmtree(self.out, ignore_errors=True)
        (self.out / WORK).mkdir(parents=True)
        items_schema = tables.items.collect_schema() if tables.items is not None else {}
        plan = plan_features(self.cfg, tables.items is not None, "upload_ts" in items_schema)
        self.work = WorkFiles(self.out / WORK, plan.entities, self.cfg.features.history)
        intake = Intake(self.cfg, self.work)
        with self.stage("validate"):
            accounting = intake.validate(tables, self.out / REJECTS)
        with self.stage("labels"):
            items, users = item_table(tables, plan), user_table(tables, plan)
            n = intake.accept(items, users, duration_column(list(tables.events.collect_schema())), True).rows
            events = self.work.scan(EVENTS)
            ts = events.select("ts").collect().to_series()
        s = self.state
        cutoff = snapshot_cutoff(ts[-1], self.cfg.freshness, self.cfg.time_zone) if n else s.cutoff
        wanted = [*plan.entities, *(["item"] if items is not None else [])]
        wanted += ["user"] if self.cfg.features.history else []
        passed = accounting["gates"]["passed"]  # else the day stays in days/<day>/ for inspection, the state unmoved
        with ThreadPoolExecutor(1) as background:  # the next state, merged and written beside the day's stages
            with self.stage("point-in-time"):
                keys = {}
                for e, key in ENTITY_KEYS.items():
                    if e in s.retained and e in wanted:  # yesterday's keys, the day's and the side table's
                        seen = pl.concat([s.keys[e].lazy(), events.select(key)])
                        keys[e] = entity_keys(seen, e, items, users)
                encodings = {c.name: c.encoding for c in self.spec.categorical}
                item = encodings["item"].load(self.root)
                staged = background.submit(self.stage_state, events, cutoff, item, keys) if passed else None
                counts, histories = self.point_in_time(events, plan, keys, item, cutoff, n)
            with self.stage("snapshot"):
                columns = write_snapshot(self.out, keys, counts, histories, items, users, self.cfg.output)
                body = {k: v for k, v in self.spec.to_dict().items() if k != "hash"}
                snapshot = layout({e: list(c.columns[1:]) for e, c in counts.items()}, columns, cutoff)
                spec = FeatureSpec.from_dict({**body, "extras": {**body["extras"], "snapshot": snapshot}})
            with self.stage("examples"):
                bounds = [parse_utc(self.spec.extras["splits"][k]) for k in ("valid_start", "test_start")]
                cuts = [0, *(int(ts.search_sorted(b, "left")) for b in bounds), n]
                ranges = {sp: (cuts[i], cuts[i + 1] - cuts[i]) for i, sp in enumerate(SPLITS) if cuts[i + 1] > cuts[i]}
                self.examples(FeatureEncoder(spec, self.root), ranges, self.cfg.output.chunk_rows)
            retained, carry = s.retained, s.carry
            if staged is not None:
                with self.stage("state"):  # the wait for the background's merge and write, then the commit
                    retained, carry, folder = staged.result()
                    self.publish(spec, ranges)
                    state = DayState(self.day, cutoff, s.config_key, spec, s.vocab_hash, retained, carry, keys)
                    state.commit(self.root / STATE_DIR, folder)
        summary = {
            **accounting,
            "day": self.day.isoformat(),
            "split_rows": {sp: ranges.get(sp, (0, 0))[1] for sp in SPLITS},
            "snapshot_cutoff": iso_utc(cutoff),
            "feature_spec_hash": spec.hash,
            "content_hash": content_hash(self.root, (SPEC_FILE, VOCAB_DIR, SNAPSHOT_DIR)),
            "state_rows": {
                **{f"retained_{e}": r.height for e, r in retained.items()},
                **{f"carry_{e}": c.height for e, c in carry.items()},
            },
            "stage_seconds": self.timings,
            "stage_cpu_seconds": self.cpu,
        }
        write_summary(self.out, summary)
        for failure in summary["gates"]["failures"]:
            self.say(f"[etl] GATE FAILED: {failure}")
        return EtlResult(self.root, summary, spec)

    def stage_state(
        self, events: pl.LazyFrame, cutoff: dt.datetime, item: Encoding, keys: dict[str, pl.DataFrame]
    ) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], Path]:
        """The next state (:meth:`next_state`), its frames written to the staging folder: run in the
        background while the day's point-in-time, snapshot and examples stages run; committed (FeatureSpec,
        ``state.json``, renamed into place) only after the day's outputs are published."""
        retained, carry = self.next_state(events, cutoff, item)
        return retained, carry, write_frames(staging_folder(self.root / STATE_DIR, self.day), retained, carry, keys)

    def next_state(
        self, events: pl.LazyFrame, cutoff: dt.datetime, item: Encoding
    ) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
        """The next state's retained rows and carry (:func:`data.etl.state.fold`)."""
        with ThreadPoolExecutor(THREADS) as pool:  # one merge per entity; Polars releases the GIL
            entities = list(self.state.retained)
            merged = pool.map(self.merged_rows, entities, [events] * len(entities), [item] * len(entities))
            rows = dict(zip(entities, merged, strict=True))
        return fold(rows, self.state.carry, cutoff, self.cfg)

    def merged_rows(self, entity: str, events: pl.LazyFrame, item: Encoding) -> pl.DataFrame:
        """The state's retained rows of ``entity`` with the day's merged in (:func:`data.etl.state.add_day`)."""
        day = entity_rows(events, entity, self.cfg, item)
        return add_day(self.state.retained[entity], day, ENTITY_KEYS[entity])

    def publish(self, spec: FeatureSpec, ranges: dict[str, Any]) -> None:
        """Move the day's part files, snapshot and FeatureSpec into the cumulative folder."""
        for split in ranges:
            for part in example_files(self.out, split):
                part.rename(self.root / split / f"part-{self.day.isoformat()}-{part.name[5:]}")
            shutil.rmtree(self.out / split)
        shutil.rmtree(self.root / SNAPSHOT_DIR)
        shutil.move(self.out / SNAPSHOT_DIR, self.root / SNAPSHOT_DIR)
        spec.write(self.root / SPEC_FILE)


def run_days(
    source: str,
    input_path: str | Path,
    out: str | Path,
    cfg: EtlConfig,
    first: dt.date,
    last: dt.date,
    *,
    bootstrap_first: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> list[EtlResult]:
    """Days ``first``..``last`` in order (a backfill); with ``bootstrap_first`` the first day is a full run."""
    if last < first:
        raise EtlConfigError(f"--until {last} is before --date {first}")
    results = []
    day = first
    while day <= last:
        run = bootstrap if bootstrap_first and day == first else run_day
        say(f"[etl] day {day} ({'bootstrap' if run is bootstrap else 'incremental'})")
        results.append(run(source, input_path, out, cfg, day, say))
        if not results[-1].passed:
            break
        day += dt.timedelta(days=1)
    return results


def run_scheduled(
    source: str, input_path: str | Path, out: str | Path, cfg: EtlConfig, day: dt.date, say: Callable[[str], None]
) -> EtlResult:
    """``aptrank run --date``: the first run of an output folder bootstraps, later runs add their day
    (a gap or another config is refused like ``aptrank etl --date``)."""
    if not state_days(Path(out) / STATE_DIR):
        return bootstrap(source, input_path, out, cfg, day, say)
    return run_day(source, input_path, out, cfg, day, say)


__all__ = [
    "DAYS_DIR",
    "STATE_DIR",
    "StateError",
    "bootstrap",
    "day_bounds",
    "examples_digest",
    "run_day",
    "run_days",
    "run_scheduled",
]
