"""The first run of an incremental daily ETL folder: ``aptrank etl --date DAY --bootstrap`` (issue #17).

The full ETL (:mod:`data.etl.run`) over every event up to the end of the day (config time zone),
plus the first state (:mod:`data.etl.state`) that :func:`data.etl.daily.run_day` builds on. The train
split must be complete by then: vocabularies, task priors and dense statistics come from it and stay
fixed.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from aptrank.data.adapters import CanonicalTables, load_source
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig
from aptrank.data.etl.days import DAYS_DIR, STATE_DIR, check_daily_config, day_bounds, parse_utc
from aptrank.data.etl.engines import with_engine
from aptrank.data.etl.hugepages import numpy_hugepage_advice_off
from aptrank.data.etl.run import WORK, EtlResult, _Job
from aptrank.data.etl.state import DayState, StateError, config_key, entity_rows, fold, present_entities
from aptrank.data.etl.summary import content_hash
from aptrank.data.etl.tables import SNAPSHOT_DIR, TABLE_FILES
from aptrank.data.etl.vocab import VOCAB_DIR
from aptrank.data.etl.workfiles import EVENTS


@numpy_hugepage_advice_off()
def bootstrap(
    source: str, input_path: str | Path, out: str | Path, cfg: EtlConfig, day: dt.date, say: Callable[[str], None]
) -> EtlResult:
    """The full ETL over every event up to the end of ``day`` and the first state (``out/state/<day>``)."""
    out = Path(out)
    check_daily_config(cfg, day)
    end = day_bounds(cfg, day)[1]
    if cfg.local_time(str(cfg.splits.valid_start)) > end:
        raise StateError(
            f"splits.valid_start: the train split ends {cfg.splits.valid_start}, after {day}: vocabularies and "
            "statistics are still being learned; bootstrap on the last train day or later"
        )
    for stale in (STATE_DIR, DAYS_DIR):
        shutil.rmtree(out / stale, ignore_errors=True)
    tables = load_source(source, input_path)
    later = pl.col("ts") >= pl.lit(end).dt.cast_time_unit("ms")  # valid rows of later days: theirs
    if cfg.time_range.end:
        later = later & (pl.col("ts") < pl.lit(cfg.local_time(cfg.time_range.end)).dt.cast_time_unit("ms"))
    tables.events = tables.events.filter(~later.fill_null(False))
    job = with_engine(_BootstrapJob, cfg.engine)(out, say, cfg, day)
    try:
        return job.run(tables)
    finally:
        shutil.rmtree(out / WORK, ignore_errors=True)


class _BootstrapJob(_Job):
    def __init__(self, out: Path, say: Callable[[str], None], cfg: EtlConfig, day: dt.date) -> None:
        super().__init__(cfg, out, say)
        self.day = day

    def run(self, tables: CanonicalTables) -> EtlResult:
        result = super().run(tables)
        events = self.work.frame(EVENTS)
        cutoff = parse_utc(result.spec.extras["snapshot"]["cutoff"])
        item = {c.name: c.encoding for c in result.spec.categorical}["item"].load(self.out)
        rows = {e: entity_rows(events, e, self.cfg, item) for e in present_entities(events.columns)}
        retained, carry = fold(rows, {}, cutoff, self.cfg)
        vocab = content_hash(self.out, (VOCAB_DIR,))
        known = {  # the snapshot's keys: its tables' key columns
            e: pl.read_parquet(path, columns=[ENTITY_KEYS[e]])
            for e, name in TABLE_FILES.items()
            if (path := self.out / SNAPSHOT_DIR / name).is_file()
        }
        state = DayState(self.day, cutoff, config_key(self.cfg), result.spec, vocab, retained, carry, known)
        if result.passed:  # a bootstrap that failed its gate leaves no state to build on
            state.write(self.out / STATE_DIR)
        return result
