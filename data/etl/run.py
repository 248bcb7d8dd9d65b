"""``aptrank etl``: canonical events -> rejects, labels, point-in-time features, time splits,
FeatureSpec, feature snapshot and summary (issue #3).

Stages (lazy Polars queries; intermediate results go to ``DIR/_work/`` as Arrow IPC and are
removed at the end, and the examples are written in row chunks, so memory is bounded by the largest
stage rather than by the dataset; ``summary.json`` records wall and CPU seconds per stage):

1. validate: one reason per row (:mod:`data.etl.validate`) -> ``rejects.parquet``;
2. accepted events + item/user attributes + labels, in (ts, input row) order;
3. split boundaries, train-split vocabularies and task priors;
4. point-in-time counts per entity (:mod:`data.etl.pit`) and the user's history pointers
   (:mod:`data.etl.history`), examples and snapshot query rows in one pass; 5. snapshot tables;
6. dense statistics on train + FeatureSpec; 7. encoded examples per split; 8. ``summary.json``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.adapters import CanonicalTables, load_source
from aptrank.data.encodings import ITEM_UPLOAD, Encoding, Hashed, derived_columns, dtype_name
from aptrank.data.etl import dense
from aptrank.data.etl.config import ENTITY_KEYS, EtlConfig, EtlConfigError, HistoryConfig, iso_utc
from aptrank.data.etl.engines import ENGINES, with_engine
from aptrank.data.etl.entity import EntityFeatures, entity_features
from aptrank.data.etl.feature_encoder import FeatureEncoder
from aptrank.data.etl.features import FeaturePlan, plan_features
from aptrank.data.etl.freshness import DAILY, snapshot_cutoff, spec_extras
from aptrank.data.etl.history import ITEM_INDEX, lists_for
from aptrank.data.etl.hugepages import numpy_hugepage_advice_off
from aptrank.data.etl.intake import Intake
from aptrank.data.etl.labels import duration_column, label_column
from aptrank.data.etl.parts import PartWriter, file_groups
from aptrank.data.etl.pit import Workspace, with_queries
from aptrank.data.etl.prior import StatePrior
from aptrank.data.etl.specbuild import build_spec
from aptrank.data.etl.splits import SPLITS, resolve_boundaries, split_expr
from aptrank.data.etl.summary import SUMMARY, content_hash, label_rates, write_summary
from aptrank.data.etl.tables import SNAPSHOT_DIR, entity_keys, item_table, layout, user_table, write_snapshot
from aptrank.data.etl.vocab import VOCAB_DIR, build_vocab, vocab_encoding
from aptrank.data.etl.workfiles import EVENTS, POINTERS, WorkFiles, chunk_ranges, pit_file
from aptrank.data.spec import FeatureSpec

EXAMPLE_FILES_AT_ONCE = 2
"""Part files encoded and written at a time (the ``examples`` stage)."""
REJECTS = "rejects.parquet"
SPEC_FILE = "feature_spec.json"
OUTPUTS: tuple[str, ...] = (REJECTS, SPEC_FILE, VOCAB_DIR, SNAPSHOT_DIR, *SPLITS)
WORK = "_work"


@dataclass
class EtlResult:
    out_dir: Path
    summary: dict[str, Any]
    spec: FeatureSpec

    @property
    def passed(self) -> bool:
        return bool(self.summary["gates"]["passed"])


@numpy_hugepage_advice_off()
def run_etl(
    source: str,
    input_path: str | Path,
    out_dir: str | Path,
    cfg: EtlConfig | None = None,
    *,
    max_reject_rate: float | None = None,
    max_duplicate_rate: float | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str | None = None,
) -> EtlResult:
    """Run the whole ETL; outputs are written even when a gate fails (see ``EtlResult.passed``).
    ``engine``: where the point-in-time features are computed (:data:`ENGINES`; None: the config's)."""
    cfg = with_gates(cfg or EtlConfig(), max_reject_rate, max_duplicate_rate)
    job = with_engine(_Job, engine or cfg.engine)(cfg, Path(out_dir), progress or (lambda _msg: None))
    try:
        return job.run(load_source(source, input_path))
    finally:
        shutil.rmtree(job.out / WORK, ignore_errors=True)


def with_gates(cfg: EtlConfig, max_reject_rate: float | None, max_duplicate_rate: float | None) -> EtlConfig:
    """``cfg`` with the data-quality gates given on the command line (None: the config's)."""
    gates = {
        k: v
        for k, v in (("max_reject_rate", max_reject_rate), ("max_duplicate_rate", max_duplicate_rate))
        if v is not None
    }
    return cfg.model_copy(update={"validation": cfg.validation.model_copy(update=gates)}) if gates else cfg


def example_files(etl_dir: str | Path, split: str) -> list[Path]:
    """The example part files of one split, in row order."""
    return sorted((Path(etl_dir) / split).glob("part-*.parquet"))


class _Job:
    def __init__(self, cfg: EtlConfig, out: Path, say: Callable[[str], None]) -> None:
        self.cfg, self.out, self.say = cfg, out, say
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.tasks = cfg.task_names
        self.labels = [label_column(t) for t in self.tasks]
        self.day_zone = cfg.time_zone if cfg.freshness == DAILY else None
        """Daily freshness: the rows' entity features as of the start of their day in this zone."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        self.say(f"[etl] {name} ...")
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)
        self.cpu[name] = round(time.process_time() - c0, 3)
        self.say(f"[etl] {name} done in {self.timings[name]:.2f}s (cpu {self.cpu[name]:.2f}s)")

    def run(self, tables: CanonicalTables) -> EtlResult:
        t0 = time.perf_counter()
        for name in (*OUTPUTS, SUMMARY, WORK):
            target = self.out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        (self.out / WORK).mkdir(parents=True)
        schema = tables.events.collect_schema()
        missing = [c for c in self.cfg.features.context if c not in schema]
        if missing:
            raise EtlConfigError(f"{tables.files.get('events')}: context columns {missing} are not event columns")
        items_schema = tables.items.collect_schema() if tables.items is not None else {}
        plan = plan_features(self.cfg, tables.items is not None, "upload_ts" in items_schema)
        self.work = WorkFiles(self.out / WORK, plan.entities, self.cfg.features.history)

        intake = Intake(self.cfg, self.work)
        with self.stage("validate"):
            accounting = intake.validate(tables, self.out / REJECTS)
        with self.stage("labels"):
            items, users = item_table(tables, plan), user_table(tables, plan)
            accepted = intake.accept(items, users, duration_column(list(schema)))
            n = accepted.rows
            events = self.work.scan(EVENTS)
        with self.stage("splits+vocab"):
            ts = events.select("ts").collect().to_series()
            bounds = resolve_boundaries(self.cfg, ts)
            cuts = [int(ts.search_sorted(b, "left")) for b in (bounds.valid_start, bounds.test_start)]
            ranges = {"train": (0, cuts[0]), "valid": (cuts[0], cuts[1] - cuts[0]), "test": (cuts[1], n - cuts[1])}
            if cuts[0] == 0:
                raise EtlConfigError(f"train split is empty (valid starts {bounds.to_dict()['valid_start']})")
            train = events.slice(0, cuts[0])
            encodings = self.vocabularies(plan, train)
            priors = train.select(
                pl.col(c).cast(pl.Float64).mean().alias(t) for t, c in zip(self.tasks, self.labels, strict=True)
            )
            prior = {t: float(v) for t, v in priors.collect().row(0, named=True).items()}
            cutoff = snapshot_cutoff(ts[-1], self.cfg.freshness, self.cfg.time_zone)
            wanted = [
                *plan.entities,
                *(["item"] if items is not None else []),
                *(["user"] if self.cfg.features.history else []),
            ]
            keys = {e: entity_keys(events, e, items, users) for e in ENTITY_KEYS if e in wanted}
        with self.stage("point-in-time"):
            item = encodings["item"].load(self.out)
            counts, histories = self.point_in_time(events, plan, keys, item, cutoff, n)
        with self.stage("snapshot"):
            columns = write_snapshot(self.out, keys, counts, histories, items, users, self.cfg.output)
        with self.stage("stats+spec"):
            recipes = plan.with_priors(prior)
            size = self.cfg.output.chunk_rows
            needed = {c for r in recipes.values() for c in r.columns} | {"ts", ITEM_UPLOAD}
            used = derived_columns([d for d in plan.derived if d in needed], self.cfg.time_zone)
            derived = [d.polars_expr() for d in used]
            train_chunks = (
                self.work.raw_chunk(o, k, lists=False, columns=needed).with_columns(derived)
                for o, k in chunk_ranges(0, cuts[0], 4 * size)
            )
            stats = dense.fit(train_chunks, recipes)
            extras = {
                "context": list(self.cfg.features.context),
                **spec_extras(self.cfg.freshness),
                "task_priors": prior,
                "splits": bounds.to_dict(),
                "snapshot": layout({e: list(c.columns[1:]) for e, c in counts.items()}, columns, cutoff),
            }
            spec = build_spec(self.cfg, plan, encodings, recipes, stats, extras)
            spec.write(self.out / SPEC_FILE)
        with self.stage("examples"):
            self.examples(FeatureEncoder(spec, self.out), ranges, size)
        rates, rows = label_rates(events.with_columns(split_expr(bounds)), self.tasks)
        summary = {
            **accounting,
            "duration_missing_rows": accepted.no_duration,
            "label_rates": rates,
            "label_rates_incl_duplicates": accepted.rates_with_duplicates,
            "split_rows": rows,
            "splits": bounds.to_dict(),
            "time_range": {"min": iso_utc(ts[0]), "max": iso_utc(ts[-1])},
            "snapshot_cutoff": extras["snapshot"]["cutoff"],
            "feature_spec_hash": spec.hash,
            "content_hash": content_hash(self.out, OUTPUTS),
            "stage_seconds": self.timings,
            "stage_cpu_seconds": self.cpu,
            "wall_seconds": round(time.perf_counter() - t0, 3),
        }
        write_summary(self.out, summary)
        for failure in summary["gates"]["failures"]:
            self.say(f"[etl] GATE FAILED: {failure}")
        return EtlResult(self.out, summary, spec)

    # ---- stages ------------------------------------------------------------------------------
    def examples(self, encoder: FeatureEncoder, ranges: dict[str, tuple[int, int]], size: int) -> None:
        """Encoded examples, one Parquet part file per job, two part files at a time: each file's
        chunks are encoded and written in order (Polars, then pyarrow in the file's writer thread),
        so two files keep both cores busy where one file left the writer thread the bottleneck. A
        file's bytes do not depend on the others (:func:`file_groups`)."""
        o = self.cfg.output
        jobs = [
            (split, j, group)
            for split, (offset, length) in ranges.items()
            for j, group in enumerate(
                file_groups(list(chunk_ranges(offset, length, size)) or [(offset, 0)], size, o.rows_per_file)
            )
        ]

        def write(job: tuple[str, int, list[tuple[int, int]]]) -> None:
            split, part, group = job
            writer = PartWriter(self.out / split, o, first_part=part)
            try:
                for start, rows in group:
                    writer.write(encoder.encode(self.work.raw_chunk(start, rows).lazy()).collect())
            finally:
                writer.close()
            self.say(f"[etl] examples {split} part {part}: {sum(rows for _, rows in group):,} rows")

        largest_first = sorted(jobs, key=lambda job: -sum(rows for _, rows in job[2]))
        with ThreadPoolExecutor(EXAMPLE_FILES_AT_ONCE) as pool:
            list(pool.map(write, largest_first))  # re-raises the first failure

    def vocabularies(self, plan: FeaturePlan, train: pl.LazyFrame) -> dict[str, Encoding]:
        """Resolved encoding per categorical feature; all train-split vocabularies in one query."""
        schema = train.collect_schema()
        out: dict[str, Encoding] = {}
        learned = []
        for c in plan.categorical:
            if isinstance(c.encoding, Encoding):
                out[c.name] = c.encoding
            elif c.encoding.kind == "hash":
                out[c.name] = Hashed(c.source, dtype_name(schema[c.source]), int(c.encoding.buckets or 0))
            else:
                learned.append(c)
        vocabs = pl.collect_all([build_vocab(train, c.source, c.encoding.min_count) for c in learned])
        for c, vocab in zip(learned, vocabs, strict=True):
            out[c.name] = vocab_encoding(
                c.name, c.source, vocab, self.out, self.cfg.features.inline_vocab_max, self.cfg.output
            )
        return {c.name: out[c.name] for c in plan.categorical}

    def point_in_time(
        self,
        events: pl.LazyFrame,
        plan: FeaturePlan,
        keys: dict[str, pl.DataFrame],
        item: Encoding,
        cutoff: dt.datetime,
        n: int,
    ) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
        """Per-event counts to work/pit_<entity>.arrow and history pointers to work/pointers.arrow;
        returns the keys' counts at cutoff and the users' history lists at cutoff (snapshot)."""
        histories = self.cfg.features.history
        counts: dict[str, pl.DataFrame] = {}
        lists: pl.DataFrame | None = None
        workspace = Workspace()  # buffers shared by the entity passes (results copied out)
        for e in [*plan.entities, *(["user"] if histories and "user" not in plan.entities else [])]:
            key = ENTITY_KEYS[e]
            extra = [item.polars_expr(pl.col("item_id")).alias(ITEM_INDEX)] if e == "user" and histories else []
            source = events.select(key, "ts", *self.labels, *extra)
            rows = with_queries(source, keys[e].lazy(), key, cutoff, [ITEM_INDEX] if extra else [])
            frame = rows.collect()
            wanted = histories if e == "user" else ()
            prior = self.prior_state(e, item, wanted)  # earlier history: none in a full run
            features = self.entity_features(frame, key, e, e in plan.entities, wanted, workspace, prior)
            if features.counts is not None:
                c = features.counts  # the events, then the snapshot queries
                self.work.write(c.slice(0, n), pit_file(e))
                snapshot = {name: c[name].slice(n).to_numpy().copy() for name in c.columns}
                counts[e] = pl.concat(
                    [frame.select(key).slice(n), pl.DataFrame(snapshot)], how="horizontal", strict=True
                )
            if e == "user" and histories:
                lists, pointers = frame.select(key).slice(n), []
                for h in histories:
                    flat, ptr = features.histories[h.name]
                    self.work.history_items[h.name] = flat
                    pointers.append(ptr.slice(0, n))
                    lists = lists.with_columns(lists_for(ptr.slice(n), flat, h))
                self.work.write(pl.concat(pointers, how="horizontal", strict=True), POINTERS)
            del frame, features  # before the next entity's frame is built
        return counts, lists

    def entity_features(
        self,
        frame: pl.DataFrame,
        key: str,
        entity: str,
        with_counts: bool,
        histories: Sequence[HistoryConfig],
        workspace: Workspace,
        prior: StatePrior | None,
    ) -> EntityFeatures:
        """One entity's features for the rows of ``frame``, with ``prior`` (history before them, which
        only counts) added, in this process (the Spark engine overrides this)."""
        windows = self.cfg.features.windows
        return entity_features(
            frame,
            key,
            entity,
            windows,
            self.tasks,
            histories,
            with_counts,
            workspace,
            day_zone=self.day_zone,
            prior=prior,
        )

    def prior_state(self, entity: str, item: Encoding, histories: Sequence[HistoryConfig]) -> StatePrior | None:
        """History before the events (:mod:`data.etl.prior`): none in a full run; the incremental run
        (:mod:`data.etl.daily`) returns its state."""
        return None


__all__ = [
    "ENGINES",
    "OUTPUTS",
    "REJECTS",
    "SPEC_FILE",
    "EtlResult",
    "example_files",
    "run_etl",
    "with_gates",
]
