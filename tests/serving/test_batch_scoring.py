"""``aptrank score``: chunked batch scoring, every input column kept, ``p_<task>`` + fused ``score``,
rejects with a reason, counts that balance; file and registry model URIs give the same scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from aptrank.pipeline.cli import app
from aptrank.serving.batch_scoring import score_chunks
from aptrank.serving.candidates import iter_chunks, scan_candidates
from aptrank.serving.scorer import Scorer

ROOT = Path(__file__).resolve().parents[2]


def _score(args: list[str]) -> dict:
    result = CliRunner().invoke(app, ["score", "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sample_scores(
    model_path: Path, etl_dir: Path, kuairand_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("scored") / "sample.parquet"
    report = _score(
        [
            "--model",
            str(model_path),
            "--source",
            "kuairand",
            "--input",
            str(kuairand_dir),
            "--output",
            str(out),
            "--features",
            str(etl_dir),
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--chunk-rows",
            "20000",
        ]
    )
    assert report["input_rows"] == report["scored_rows"] == 94_784  # every row of the shipped log
    assert report["rejected_rows"] == 0 and report["rejects_by_reason"] == {}
    return out


def test_output_keeps_every_column_and_adds_probabilities_and_score(sample_scores: Path, kuairand_dir: Path) -> None:
    from aptrank.data.adapters import load_source

    events = load_source("kuairand", kuairand_dir).events.collect()
    out = pl.read_parquet(sample_scores)
    assert out.columns == [*events.columns, "p_click", "p_like", "p_finish", "score"]
    assert out.select(events.columns).equals(events)  # rows in input order, values untouched
    assert out.schema["p_click"] == pl.Float32 and out.schema["score"] == pl.Float64
    p = out.select("p_click", "p_like", "p_finish").to_numpy().astype(np.float64)
    assert ((p > 0) & (p < 1)).all()
    # configs/demo.yaml: scoring.weights {click: 1, like: 2, finish: 1}, summed in task order
    assert np.array_equal(out["score"].to_numpy(), (1.0 * p[:, 0] + 2.0 * p[:, 1]) + 1.0 * p[:, 2])
    assert pl.read_parquet(sample_scores.with_name("sample.rejects.parquet")).height == 0


def test_scores_equal_the_scorer_and_do_not_depend_on_chunking_or_workers(
    sample_scores: Path, scorer: Scorer, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    direct = scorer.score(candidates)
    tail = pl.read_parquet(sample_scores).tail(candidates.height)
    assert np.array_equal(tail["p_like"].to_numpy(), direct.probabilities[:, 1])
    assert np.array_equal(tail["score"].to_numpy(), direct.score)
    source = tmp_path / "candidates.parquet"
    candidates.write_parquet(source)
    outs = []
    for rows, workers in ((7, 1), (100_000, 1), (7, 3)):  # 3 threads: chunks finish out of order
        out = tmp_path / f"out{rows}-{workers}.parquet"
        chunks = iter_chunks(scan_candidates("canonical", source), rows)
        report = score_chunks(scorer, chunks, out, tmp_path / f"rej{rows}-{workers}.parquet", workers=workers)
        assert report.scored_rows == candidates.height
        outs.append(pl.read_parquet(out))
    assert outs[0].equals(outs[1]) and outs[0].equals(outs[2])  # same rows, same order, same values
    assert np.array_equal(outs[0]["score"].to_numpy(), direct.score)


def test_unscorable_rows_are_rejected_with_a_reason(scorer: Scorer, candidates: pl.DataFrame, tmp_path: Path) -> None:
    rows = candidates.head(100).with_row_index("row")
    bad = rows.with_columns(
        pl.when(pl.col("row").is_in([3, 50])).then(None).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(pl.col("row").is_in([4, 50])).then(None).otherwise(pl.col("item_id")).alias("item_id"),
        pl.when(pl.col("row") == 77).then(None).otherwise(pl.col("ts")).alias("ts"),
    )
    source = tmp_path / "events.parquet"
    bad.write_parquet(source)
    report = score_chunks(
        scorer,
        iter_chunks(scan_candidates("canonical", tmp_path), 16),
        tmp_path / "out.parquet",
        tmp_path / "rejects.parquet",
        workers=2,
    )
    assert (report.input_rows, report.scored_rows, report.rejected_rows) == (100, 96, 4)
    # first failing rule wins: row 50 lacks both ids and counts once, as missing_user_id
    assert report.rejects_by_reason == {"missing_item_id": 1, "missing_ts": 1, "missing_user_id": 2}
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert rejects.select("row", "reason").sort("row").rows() == [
        (3, "missing_user_id"),
        (4, "missing_item_id"),
        (50, "missing_user_id"),
        (77, "missing_ts"),
    ]
    assert rejects.columns == [*bad.columns, "reason"]
    scored = pl.read_parquet(tmp_path / "out.parquet")
    assert sorted(scored["row"].to_list() + rejects["row"].to_list()) == list(range(100))


def test_registry_uri_scores_like_the_file(
    champion: str, registry: object, sample_scores: Path, kuairand_dir: Path, tmp_path: Path
) -> None:
    """``models:/NAME@champion`` with no --features: the snapshot comes from the version's run."""
    out = tmp_path / "via_registry.parquet"
    report = _score(
        [
            "--model",
            champion,
            "--tracking-uri",
            registry.uri,
            "--source",
            "kuairand",  # type: ignore[attr-defined]
            "--input",
            str(kuairand_dir),
            "--output",
            str(out),
            "--weight",
            "click=1",
            "--weight",
            "like=2",
            "--weight",
            "finish=1",
        ]
    )
    assert report["model_version"] == "aptrank-serving/1"
    assert pl.read_parquet(out).equals(pl.read_parquet(sample_scores))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weight", "share=1"], "task(s) ['share'] are not outputs of the model"),
        (["--source", "csv"], "'csv' is not one of kuairand, canonical"),
        (["--features", "/nonexistent/etl"], "/nonexistent/etl"),
    ],
)
def test_bad_input_is_refused_naming_it(
    args: list[str], message: str, model_path: Path, etl_dir: Path, kuairand_dir: Path, tmp_path: Path
) -> None:
    base = {
        "--model": str(model_path),
        "--source": "kuairand",
        "--input": str(kuairand_dir),
        "--output": str(tmp_path / "o.parquet"),
        "--features": str(etl_dir),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    if args[0] == "--weight":
        flat += args
    result = CliRunner().invoke(app, ["score", "--no-progress", *flat])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_candidates_without_context_column_are_refused(
    model_path: Path, etl_dir: Path, candidates: pl.DataFrame, tmp_path: Path
) -> None:
    candidates.drop("tab").write_parquet(tmp_path / "c.parquet")
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--no-progress",
            "--model",
            str(model_path),
            "--source",
            "canonical",
            "--input",
            str(tmp_path / "c.parquet"),
            "--output",
            str(tmp_path / "o.parquet"),
            "--features",
            str(etl_dir),
        ],
    )
    assert result.exit_code == 2
    assert "lack required columns ['tab']" in result.output


def test_a_bad_user_table_bound_in_the_environment_is_one_line_and_exit_2(
    model_path: Path, etl_dir: Path, kuairand_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "lots"  # every rule of the value: tests/serving/test_user_precompute.py
    monkeypatch.setenv("APTRANK_USER_TABLE_MAX_BYTES", value)
    args = ["--model", str(model_path), "--source", "kuairand", "--input", str(kuairand_dir)]
    args += ["--output", str(tmp_path / "o.parquet"), "--features", str(etl_dir)]
    result = CliRunner().invoke(app, ["score", "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert "APTRANK_USER_TABLE_MAX_BYTES: expected a whole number of bytes" in result.output
    assert repr(value) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.parquet").exists()
