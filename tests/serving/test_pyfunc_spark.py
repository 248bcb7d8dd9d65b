"""``mlflow.pyfunc.spark_udf`` over the registered scorer model gives the pyfunc's scores in local Spark
(a real ``local[1]`` Spark session: JVM, Arrow transfer, a Python worker process that loads the model)."""

from __future__ import annotations

import numpy as np
import polars as pl

from tests.serving.conftest import Registry

RESULT_TYPE = "p_click float, p_like float, p_finish float, score double"


def test_spark_udf_scores_equal_the_pyfunc(
    spark, pyfunc, registered: str, registry: Registry, candidates: pl.DataFrame
) -> None:
    import mlflow.pyfunc
    from pyspark.sql.functions import struct

    from aptrank.pipeline.mlflow_store import fluent_uri

    rows = candidates.head(400).with_columns(pl.col("ts").dt.replace_time_zone(None))  # Spark/MLflow: naive UTC
    frame = spark.createDataFrame(rows.to_pandas())
    with fluent_uri(registry.uri):
        udf = mlflow.pyfunc.spark_udf(spark, registered, result_type=RESULT_TYPE, env_manager="local")
    columns = ["user_id", "item_id", "ts", "tab"]
    scored = frame.withColumn("out", udf(struct(*columns))).select(*columns, "out.*").toPandas()
    direct = pyfunc.predict(rows.to_pandas())
    assert len(scored) == rows.height
    assert scored["item_id"].tolist() == rows["item_id"].to_list()
    for column in ("p_click", "p_like", "p_finish", "score"):
        np.testing.assert_allclose(scored[column].to_numpy(), direct[column].to_numpy(), rtol=0, atol=1e-6)
