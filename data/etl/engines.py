"""Where the ETL's point-in-time passes run: ``polars`` (this process) or ``spark`` (PySpark).

An engine is a mixin that overrides a job's ``entity_features`` (:mod:`data.etl.spark`), so the full
job (:mod:`data.etl.run`) and the daily job (:mod:`data.etl.daily`) run on either engine unchanged.
"""

from __future__ import annotations

from typing import TypeVar

from aptrank.data.etl.config import EtlConfigError

ENGINES: tuple[str, ...] = ("polars", "spark")
Job = TypeVar("Job", bound=type)


def with_engine(job: Job, engine: str) -> Job:
    """``job`` (an ETL job class) with its point-in-time passes on ``engine`` (:data:`ENGINES`)."""
    if engine not in ENGINES:
        raise EtlConfigError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    if engine == "polars":
        return job
    from aptrank.data.etl.spark import SparkEngine  # pyspark is an optional extra

    return type(f"Spark{job.__name__}", (SparkEngine, job), {})  # type: ignore[return-value]


__all__ = ["ENGINES", "with_engine"]
