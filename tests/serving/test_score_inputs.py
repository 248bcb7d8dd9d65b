"""Issue #20: ``aptrank score`` on an empty input writes zero rows (not one all-null phantom row) in
the input's columns plus the scoring's, and scores CSV candidates (ISO-8601 or epoch-ms ``ts``; an
unparseable ``ts`` is a ``missing_ts`` reject), as its help advertises."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from aptrank.pipeline.cli import app


def score(model: Path, features: Path, candidates: Path, out: Path) -> tuple[int, dict, str]:
    args = ["score", "--model", str(model), "--features", str(features), "--source", "canonical"]
    result = CliRunner().invoke(app, [*args, "--input", str(candidates), "--output", str(out), "--no-progress"])
    lines = result.stdout.strip().splitlines()
    return result.exit_code, (json.loads(lines[-1]) if lines else {}), result.output


def test_empty_input_writes_zero_rows(
    model_path: Path, etl_dir: Path, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.parquet"
    candidates.head(0).write_parquet(empty)
    code, report, output = score(model_path, etl_dir, empty, tmp_path / "out.parquet")
    assert code == 0, output
    assert (report["input_rows"], report["scored_rows"], report["rejected_rows"]) == (0, 0, 0)
    scored = pl.read_parquet(tmp_path / "out.parquet")
    assert scored.height == 0 and scored.columns == [*candidates.columns, "p_click", "p_like", "p_finish", "score"]
    assert pl.read_parquet(tmp_path / "out.rejects.parquet").height == 0


def test_csv_candidates_score_like_parquet(
    model_path: Path, etl_dir: Path, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    rows = candidates.head(200)
    rows.write_parquet(tmp_path / "c.parquet")
    as_text = rows.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f%z"))
    as_text.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("not a time")).otherwise(pl.col("ts")).alias("ts")
    ).write_csv(tmp_path / "c.csv")
    code, _, output = score(model_path, etl_dir, tmp_path / "c.parquet", tmp_path / "p.parquet")
    assert code == 0, output
    code, from_csv, output = score(model_path, etl_dir, tmp_path / "c.csv", tmp_path / "t.parquet")
    assert code == 0, output
    assert from_csv["input_rows"] == 200 and from_csv["rejects_by_reason"] == {"missing_ts": 1}
    expected = pl.read_parquet(tmp_path / "p.parquet").filter(pl.int_range(pl.len()) != 7)
    got = pl.read_parquet(tmp_path / "t.parquet")
    assert got["score"].to_list() == expected["score"].to_list()
