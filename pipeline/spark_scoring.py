"""Batch scoring on Spark: ``aptrank score --engine spark`` (issue #17; PySpark, the ``spark`` extra).

The registered scorer model (:mod:`serving.pyfunc_model`: ONNX graph, feature snapshot and fusion
weights in one MLflow ``python_function`` model) is applied to a Spark DataFrame of candidates with
``mlflow.pyfunc.spark_udf`` (``env_manager="local"``: the executors' Python imports aptrank from its
own environment), so the scores are the pyfunc's, which are the local scorer's (tested to 1e-6).

* **Input** (``--source canonical``): a local file or folder, found by the local scorer's own rule
  (:func:`serving.candidates.canonical_files`); any URI Spark reads (``hdfs://``, ``s3a://``, ...;
  Parquet unless it ends in ``.csv``); or ``table:NAME``, a table of the Spark catalog. CSV is read
  with a header and Spark's type inference, its integers widened to ``long`` (Polars' ``Int64``) and
  no timestamp or date inference; a ``ts`` given as text or epoch milliseconds is turned into the
  canonical timestamp on every partition by the local scorer's own
  :func:`serving.candidates.with_canonical_ts` (``mapInArrow``), so unparseable ``ts`` values become
  null and their rows are rejected as ``missing_ts``, as locally.
* **Rejects**: the local rules (:data:`serving.candidates.REJECT_RULES`, first failing rule wins, and
  :data:`serving.candidates.NON_FINITE` for a NaN/inf model output); rejected rows are never handed
  to the model and are written with their ``reason``. ``input_rows = scored_rows + rejected_rows``.
* **Output**: Parquet folders (``--output`` and its rejects folder, part files; ``--partition-by``
  columns become ``COLUMN=VALUE/`` folders) with the local scorer's columns and types: every input
  column, ``p_<task>`` (float) and ``score`` (double), timestamps in milliseconds, UTC. Local
  folders are written under a temporary name and swapped in; other URIs are overwritten in place.
* **Not on Spark**: weights other than the model's (the pyfunc fuses with its registered weights: an
  override that differs is refused), another feature snapshot (``--features``), and the lookup
  counts ``missing_rows`` / ``oov`` of the local summary (the pyfunc returns scores only: they stay
  empty).

MLflow: https://mlflow.org/docs/latest/api_reference/python_api/mlflow.pyfunc.html#mlflow.pyfunc.spark_udf
Spark: https://spark.apache.org/docs/3.5.4/api/python/reference/pyspark.sql/api/pyspark.sql.DataFrame.mapInArrow.html
"""

from __future__ import annotations

import functools
import importlib.util
import operator
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from aptrank.data.adapters.base import SourceError
from aptrank.serving.batch_scoring import BatchReport, check_added_columns
from aptrank.serving.candidates import NON_FINITE, REASON, REJECT_RULES, canonical_files, require_columns
from aptrank.serving.candidates import with_canonical_ts as canonical_ts
from aptrank.serving.errors import CandidateError, ModelLoadError, ServingError
from aptrank.serving.fusion import Fusion, read_fusion
from aptrank.serving.model_source import ModelSource

SPARK_EXTRA = "pip install 'aptrank[spark]' (scripts/install.sh installs it, and a Java runtime when none is found)"
TABLE_PREFIX = "table:"
TS = "ts"
NO_MATCH = "'~no-timestamp-inference~'"
"""A datetime pattern no text matches: Spark infers no timestamps from CSV (Polars infers none)."""
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",  # naive timestamps are UTC, as in the canonical schema
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",  # the canonical unit (ms, UTC)
}


class SparkJobError(RuntimeError):
    """The Spark job failed after it started (an executor or the JVM): exit 1, not bad input."""


@dataclass(frozen=True)
class SparkModel:
    """A scorer model on local disk, ready for ``spark_udf``."""

    folder: Path
    version: str
    inputs: list[str]
    outputs: list[str]
    weights: dict[str, float]


def require_pyspark() -> None:
    """:class:`ServingError` naming the extra to install when pyspark cannot be imported."""
    if importlib.util.find_spec("pyspark") is None:
        raise ServingError(f"--engine spark needs pyspark, which is not installed: {SPARK_EXTRA}")


def open_model(uri: str, tracking_uri: str | None, dest: Path, override: Mapping[str, float]) -> SparkModel:
    """The scorer model of ``uri`` (``models:/NAME@ALIAS``, ``models:/NAME/N`` pinned now, or a model
    folder) downloaded under ``dest`` by :class:`serving.model_source.ModelSource` (its checks and
    messages); ``override`` weights must equal the registered ones."""
    from mlflow.models import Model

    from aptrank.serving.pyfunc_model import bundled_files  # defines an MLflow model: import on use

    fetched = ModelSource(uri, tracking_uri).fetch(dest)
    folder = fetched.path.parent.parent  # <model>/artifacts/model.onnx
    files = bundled_files(folder)
    if files is None or not (folder / "MLmodel").is_file():
        raise ModelLoadError(
            f"model '{uri}': not a scorer model (MLmodel + artifacts/model.onnx, features/, fusion.json); "
            "--engine spark scores registered scorer models, --engine local also scores ONNX files"
        )
    weights = read_fusion(files.fusion)
    tasks = tuple(weights)
    if override and Fusion.build(tasks, override) != Fusion.build(tasks, weights):
        raise ModelLoadError(
            f"model {fetched.version}: --engine spark fuses with the weights registered with the model {weights}; "
            f"the given weights {dict(override)} differ (use --engine local, or register a model with them)"
        )
    signature = Model.load(str(folder / "MLmodel")).signature
    if signature is None or signature.outputs is None:
        raise ModelLoadError(f"model '{uri}': its MLmodel has no signature (inputs and outputs)")
    return SparkModel(folder, fetched.version, signature.inputs.input_names(), signature.outputs.input_names(), weights)


def session() -> Any:
    """The ETL engine's Spark session (:func:`data.etl.spark.spark_session`) with :data:`SESSION_CONF`."""
    from aptrank.data.etl.spark import spark_session

    spark = spark_session("aptrank-score")
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    return spark


def candidate_paths(source: str) -> list[str]:
    """What Spark reads for ``source``: the files of a local path (checked here, before Spark
    starts) or the URI itself."""
    if source.startswith(TABLE_PREFIX) or "://" in source:
        return [source]
    return [str(p) for p in canonical_files(Path(source))]


def read_candidates(spark: Any, source: str) -> Any:
    """The candidates of ``source`` as a Spark DataFrame in canonical types (module docstring)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, ShortType, StringType, StructField, StructType, TimestampType

    paths = candidate_paths(source)
    if source.startswith(TABLE_PREFIX):
        frame = spark.table(source[len(TABLE_PREFIX) :])
    elif all(p.endswith(".csv") for p in paths):
        reader = spark.read.options(header="true", inferSchema="true", preferDate="false")
        frame = reader.options(timestampFormat=NO_MATCH, timestampNTZFormat=NO_MATCH).csv(paths)
        widen = {f.name for f in frame.schema.fields if isinstance(f.dataType, IntegerType | ShortType)}
        frame = frame.select(*[F.col(c).cast(LongType()) if c in widen else F.col(c) for c in frame.columns])
    elif any(p.endswith(".csv") for p in paths):
        raise SourceError(f"{source}: mixed CSV and Parquet files; give one format")
    else:
        frame = spark.read.parquet(*paths)
    ts_field = next((f for f in frame.schema.fields if f.name == TS), None)
    if ts_field is None or not isinstance(ts_field.dataType, StringType | IntegerType | LongType):
        return frame
    fields = [f if f.name != TS else StructField(TS, TimestampType(), True) for f in frame.schema.fields]
    return frame.mapInArrow(canonical_ts_batches, StructType(fields))


def canonical_ts_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: each batch with ``ts`` parsed by the local scorer's rule."""
    for batch in batches:
        index = batch.schema.get_field_index(TS)
        ts = canonical_ts(pl.from_arrow(batch.select([index])).lazy()).collect().to_series()  # type: ignore[union-attr]
        columns = list(batch.columns)
        columns[index] = ts.dt.cast_time_unit("us").to_arrow()
        schema = batch.schema.set(index, pa.field(TS, pa.timestamp("us", tz="UTC")))
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def scored_and_rejected(frame: Any, model: SparkModel) -> Any:
    """Every input row once: scorable rows with the model's outputs (``reason`` null, or
    :data:`NON_FINITE`), unscorable rows with their ``reason`` and null outputs."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    columns = list(frame.columns)
    require_columns(columns)
    check_added_columns(columns, model.outputs)
    missing = [c for c in model.inputs if c not in columns]
    if missing:
        raise CandidateError(f"candidates lack column(s) {missing} of the model's signature {model.inputs}")
    reason = F.lit(None).cast("string")
    for rule, column in reversed(REJECT_RULES):
        reason = F.when(F.col(column).isNull(), F.lit(rule)).otherwise(reason)
    tagged = frame.withColumn(REASON, reason)
    udf = mlflow.pyfunc.spark_udf(frame.sparkSession, str(model.folder), env_manager="local")
    out = "_aptrank_scores"
    good = tagged.filter(F.col(REASON).isNull()).withColumn(out, udf(F.struct(*model.inputs)))
    scored = good.select(*columns, *[F.col(f"{out}.{c}").alias(c) for c in model.outputs])
    broken = functools.reduce(
        operator.or_, [F.col(c).isNull() | F.isnan(c) | (F.abs(c) == float("inf")) for c in model.outputs]
    )
    scored = scored.withColumn(REASON, F.when(broken, F.lit(NON_FINITE)))
    types = {f.name: f.dataType for f in scored.schema.fields}
    rejected = tagged.filter(F.col(REASON).isNotNull()).select(
        *columns, *[F.lit(None).cast(types[c]).alias(c) for c in model.outputs], REASON
    )
    return scored.unionByName(rejected)


def write_parquet(frame: Any, target: str, partition_by: Sequence[str]) -> None:
    """``frame`` as a Parquet folder at ``target`` (zstd, as the local scorer); a local folder is
    written under a temporary name and swapped in, so a failed run leaves the old one."""
    writer = frame.write.mode("overwrite").option("compression", "zstd")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if "://" in target:
        writer.parquet(target)
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer.parquet(str(tmp))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


def score_on_spark(
    source: str, model: SparkModel, output: str, rejects: str, partition_by: Sequence[str] = ()
) -> BatchReport:
    """Score the candidates of ``source`` with ``model``; write ``output`` and ``rejects``; the
    counts as the local scorer reports them (module docstring)."""
    from pyspark import StorageLevel
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    spark = session()
    try:
        frame = read_candidates(spark, source)
        unknown = [c for c in partition_by if c not in frame.columns]
        if unknown:
            raise CandidateError(f"--partition-by {unknown}: not column(s) of the candidates {frame.columns}")
        rows = scored_and_rejected(frame, model).persist(StorageLevel.MEMORY_AND_DISK)
    except AnalysisException as e:
        raise SourceError(f"{source}: Spark cannot read it: {str(e).splitlines()[0]}") from None
    try:
        counts = {r[REASON]: int(r["count"]) for r in rows.groupBy(REASON).count().collect()}
        write_parquet(rows.filter(F.col(REASON).isNull()).drop(REASON), output, partition_by)
        write_parquet(rows.filter(F.col(REASON).isNotNull()).drop(*model.outputs), rejects, ())
    except Exception as e:  # executor or JVM failures surface as py4j / pyspark errors
        raise SparkJobError(f"Spark scoring of {source} failed: {str(e).strip().splitlines()[0]}") from e
    finally:
        rows.unpersist()
    report = BatchReport(model_version=model.version, output=output, rejects=rejects)
    report.scored_rows = counts.pop(None, 0)
    report.rejects_by_reason = dict(sorted(counts.items()))
    report.rejected_rows = sum(counts.values())
    report.input_rows = report.scored_rows + report.rejected_rows
    report.seconds = round(time.perf_counter() - t0, 3)
    report.rows_per_s = round(report.input_rows / max(report.seconds, 1e-9), 1)
    return report
