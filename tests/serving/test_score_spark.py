"""Issue #17: ``aptrank score --engine spark`` (``mlflow.pyfunc.spark_udf`` over the registered scorer
model, in a real local Spark session) writes what ``aptrank score`` writes: the same rows, columns
and dtypes, every ``p_<task>`` and ``score`` within 1e-6, the same rejects and counts; partitioned
folders by ``--partition-by``. The refusals need no Spark: they happen before it starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from aptrank.pipeline.cli import app
from tests.serving.conftest import ROOT, Registry

OUTPUTS = ["p_click", "p_like", "p_finish", "score"]
KEYS = ["user_id", "item_id", "ts", "tab"]


def score(registry: Registry, model: str, candidates: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    args = ["score", "--model", model, "--tracking-uri", registry.uri, "--source", "canonical"]
    args += ["--input", str(candidates), "--output", str(out), "--no-progress", "--workers", "1", *extra]
    result = CliRunner().invoke(app, args)
    lines = result.stdout.strip().splitlines()
    return result.exit_code, (json.loads(lines[-1]) if result.exit_code == 0 else {}), result.output


def with_rejects(candidates: pl.DataFrame, rows: int) -> pl.DataFrame:
    """``rows`` real candidates; row 5 without user_id and row 9 without ts (rejected)."""
    index = pl.int_range(pl.len())
    return candidates.head(rows).with_columns(
        pl.when(index == 5).then(None).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(index == 9).then(None).otherwise(pl.col("ts")).alias("ts"),
    )


def assert_same_scores(local: pl.DataFrame, spark: pl.DataFrame) -> None:
    assert spark.height == local.height
    local, spark = local.sort(KEYS), spark.select(local.columns).sort(KEYS)
    assert spark.select(KEYS).equals(local.select(KEYS))
    for column in OUTPUTS:
        np.testing.assert_allclose(spark[column].to_numpy(), local[column].to_numpy(), rtol=0, atol=1e-6)


def test_spark_engine_equals_the_local_scorer(
    spark, registered: str, registry: Registry, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    rows = with_rejects(candidates, 1500)
    rows.write_parquet(tmp_path / "candidates.parquet")
    code, local, output = score(registry, registered, tmp_path / "candidates.parquet", tmp_path / "local.parquet")
    assert code == 0, output
    out = tmp_path / "spark"
    code, report, output = score(
        registry, registered, tmp_path / "candidates.parquet", out, "--engine", "spark", "--partition-by", "tab"
    )
    assert code == 0, output
    counts = ("input_rows", "scored_rows", "rejected_rows", "rejects_by_reason", "model_version")
    assert {k: report[k] for k in counts} == {k: local[k] for k in counts}
    assert report["rejects_by_reason"] == {"missing_ts": 1, "missing_user_id": 1}

    expected = pl.read_parquet(tmp_path / "local.parquet")
    assert {p.name for p in out.glob("tab=*")} == {f"tab={t}" for t in expected["tab"].unique()}
    one_part = pl.read_parquet_schema(next(out.glob("tab=*/*.parquet")))
    assert list(one_part.items()) == [(c, t) for c, t in expected.schema.items() if c != "tab"]
    got = pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)
    assert dict(got.schema) == dict(expected.schema)
    assert_same_scores(expected, got)

    local_rejects = pl.read_parquet(tmp_path / "local.rejects.parquet")
    spark_rejects = pl.read_parquet(f"{report['rejects']}/*.parquet")
    assert spark_rejects.schema == local_rejects.schema
    assert spark_rejects.sort("reason").equals(local_rejects.sort("reason"))


def test_spark_engine_reads_csv_like_the_local_scorer(
    spark, registered: str, registry: Registry, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    """ISO-8601 text ``ts`` is parsed by the local rule on every partition; "not a time" is a reject."""
    rows = candidates.head(300).with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))
    bad = pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("not a time")).otherwise(pl.col("ts"))
    rows.with_columns(bad.alias("ts")).write_csv(tmp_path / "c.csv")
    code, local, output = score(registry, registered, tmp_path / "c.csv", tmp_path / "local.parquet")
    assert code == 0, output
    code, report, output = score(registry, registered, tmp_path / "c.csv", tmp_path / "spark", "--engine", "spark")
    assert code == 0, output
    assert report["rejects_by_reason"] == local["rejects_by_reason"] == {"missing_ts": 1}
    expected, got = pl.read_parquet(tmp_path / "local.parquet"), pl.read_parquet(tmp_path / "spark" / "*.parquet")
    assert got.schema == expected.schema
    assert_same_scores(expected, got)


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("models:/no-such-model@champion", [], "models:/no-such-model@champion"),
        (None, ["--weight", "like=5"], "differ"),
        (None, ["--source", "kuairand"], "--source kuairand"),
    ],
)
def test_spark_engine_refusals_exit_2(
    registered: str, registry: Registry, candidates: pl.DataFrame, tmp_path: Path, model, extra, message
) -> None:
    candidates.head(10).write_parquet(tmp_path / "c.parquet")
    code, _, output = score(
        registry, model or registered, tmp_path / "c.parquet", tmp_path / "o", "--engine", "spark", *extra
    )
    assert code == 2, output
    last = output.strip().splitlines()[-1]  # after MLflow's download progress lines, if any
    assert last.startswith("error:") and message in last and "Traceback" not in output


def test_spark_engine_missing_input_and_missing_pyspark_exit_2(registry: Registry, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    code, _, output = score(registry, "models:/x@champion", missing, tmp_path / "o", "--engine", "spark")
    assert code == 2 and output.strip() == f"error: {missing}: candidates input does not exist"
    hide_pyspark = "import sys; sys.modules['pyspark'] = None; from aptrank.pipeline.cli import main; main()"
    args = ["score", "--model", "models:/x@champion", "--source", "canonical", "--input", str(missing)]
    proc = subprocess.run(
        [sys.executable, "-c", hide_pyspark, *args, "--output", str(tmp_path / "o"), "--engine", "spark"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --engine spark needs pyspark, which is not installed: pip install 'aptrank[spark]' "
        "(scripts/install.sh installs it, and a Java runtime when none is found)"
    ]


def test_config_scoring_engine_spark_chooses_spark(
    registry: Registry, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    """``scoring.engine: spark`` in ``--config`` takes the Spark path (its refusal of KuaiRand);
    ``--engine local`` wins."""
    (tmp_path / "job.yaml").write_text("scoring:\n  engine: spark\n")
    candidates.head(10).write_parquet(tmp_path / "c.parquet")
    args = ["score", "--model", "models:/x@champion", "--source", "kuairand", "--input", str(tmp_path / "c.parquet")]
    args += ["--output", str(tmp_path / "o.parquet"), "--config", str(tmp_path / "job.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--engine spark reads canonical candidates" in result.output
    result = CliRunner().invoke(app, [*args, "--engine", "local"])
    assert result.exit_code == 2 and "--engine spark" not in result.output
