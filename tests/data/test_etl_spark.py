"""``aptrank etl --engine spark`` (local mode, one session for the module): the point-in-time passes
run on Spark through ``mapInArrow`` and the outputs equal the embedded engine's byte for byte (same
content hash: FeatureSpec, vocabularies, examples, snapshot and rejects with reasons) on the shipped
KuaiRand sample and on a generated log with bad rows and string ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from aptrank.data.etl.config import load_config
from aptrank.data.etl.run import run_etl
from aptrank.data.etl.spark import spark_session
from aptrank.data.synthetic import GeneratorConfig, generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "etl"


@pytest.fixture(scope="module", autouse=True)
def spark() -> Iterator[Any]:
    session = spark_session()
    yield session
    session.stop()


def test_cli_spark_engine_equals_polars_on_kuairand(app: typer.Typer, etl_dir: Path, tmp_path: Path) -> None:
    args = ["etl", "--source", "kuairand", "--input", str(Path(__file__).parents[2] / "data/samples/kuairand-pure")]
    args += ["--out", str(tmp_path / "o"), "--config", str(CONFIGS / "kuairand.yaml"), "--engine", "spark", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spark_summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    polars_summary = json.loads((etl_dir / "summary.json").read_text())
    assert spark_summary["content_hash"] == polars_summary["content_hash"]
    assert spark_summary["feature_spec_hash"] == polars_summary["feature_spec_hash"]


def test_spark_engine_equals_polars_on_generated_bad_rows(tmp_path: Path) -> None:
    log = tmp_path / "log"
    generate(log, GeneratorConfig(events=20_000, users=400, items=300, bad_rows=0.04, seed=11, days=4), progress=False)
    events = pl.read_parquet(sorted((log / "events").rglob("*.parquet")))
    (log / "events").rename(tmp_path / "numeric-events")
    as_string = pl.when(pl.col("user_id") < 0).then(pl.lit("")).otherwise(pl.format("u{}", pl.col("user_id")))
    events.with_columns(as_string.alias("user_id")).write_parquet(log / "events.parquet")  # negative -> blank
    users = pl.read_parquet(log / "users.parquet")
    users.with_columns(as_string.alias("user_id")).write_parquet(log / "users.parquet")
    cfg = load_config(CONFIGS / "synthetic.yaml")
    embedded = run_etl("canonical", log, tmp_path / "polars", cfg)
    spark = run_etl("canonical", log, tmp_path / "spark", cfg, engine="spark")
    assert spark.summary["content_hash"] == embedded.summary["content_hash"]
    assert spark.spec.hash == embedded.spec.hash
    for key in ("input_rows", "accepted_rows", "rejected_rows", "rejects_by_reason", "split_rows"):
        assert spark.summary[key] == embedded.summary[key]
    s = spark.summary
    assert s["accepted_rows"] + s["rejected_rows"] == s["input_rows"] == events.height
    generated = {r: n for r, n in s["rejects_by_reason"].items() if r != "implausible_ts"}  # not made by the generator
    assert min(generated.values()) > 0 and len(generated) >= 7


def test_incremental_day_on_spark_equals_polars(tmp_path: Path) -> None:
    """The engine is not part of the state's config key: a day on Spark continues a Polars bootstrap."""
    import datetime as dt

    from aptrank.data.etl.daily import examples_digest, run_day, run_days
    from aptrank.data.etl.summary import content_hash

    log = tmp_path / "log"
    generate(log, GeneratorConfig(events=12_000, users=300, items=200, bad_rows=0.005, seed=2, days=3), progress=False)
    cfg = load_config(CONFIGS / "synthetic.yaml")
    splits = cfg.splits.model_copy(update={"valid_start": "2022-04-09", "test_start": "2022-04-10"})
    cfg = cfg.model_copy(update={"splits": splits})
    day = dt.date(2022, 4, 10)
    for engine in ("polars", "spark"):
        (boot,) = run_days(
            "canonical", log, tmp_path / engine, cfg, dt.date(2022, 4, 9), dt.date(2022, 4, 9), bootstrap_first=True
        )
        assert boot.passed, boot.summary["gates"]  # bad rows under the reject-rate gate (1%)
        done = run_day("canonical", log, tmp_path / engine, cfg.model_copy(update={"engine": engine}), day, print)
        assert done.passed, done.summary["gates"]
    parts = ("feature_spec.json", "vocab", "snapshot", "state")
    assert content_hash(tmp_path / "spark", parts) == content_hash(tmp_path / "polars", parts)
    assert examples_digest(tmp_path / "spark") == examples_digest(tmp_path / "polars")


def test_daily_freshness_on_spark_equals_polars(tmp_path: Path) -> None:
    """``freshness: daily`` through the Spark engine: the bootstrap (a full run) and the next day give
    the outputs of the embedded engine."""
    import datetime as dt

    from aptrank.data.etl.daily import examples_digest, run_days
    from aptrank.data.etl.summary import content_hash

    log = tmp_path / "log"
    generate(log, GeneratorConfig(events=8_000, users=200, items=150, bad_rows=0.005, seed=5, days=3), progress=False)
    cfg = load_config(CONFIGS / "synthetic.yaml")
    splits = cfg.splits.model_copy(update={"valid_start": "2022-04-09", "test_start": "2022-04-10"})
    cfg = cfg.model_copy(update={"splits": splits, "freshness": "daily"})
    for engine in ("polars", "spark"):
        first, last = dt.date(2022, 4, 9), dt.date(2022, 4, 10)
        done = run_days(
            "canonical",
            log,
            tmp_path / engine,
            cfg.model_copy(update={"engine": engine}),
            first,
            last,
            bootstrap_first=True,
        )
        assert [r.passed for r in done] == [True, True] and done[-1].spec.extras["freshness"] == "daily"
    parts = ("feature_spec.json", "vocab", "snapshot", "state")
    assert content_hash(tmp_path / "spark", parts) == content_hash(tmp_path / "polars", parts)
    assert examples_digest(tmp_path / "spark") == examples_digest(tmp_path / "polars")
