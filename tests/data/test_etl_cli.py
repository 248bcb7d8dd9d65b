"""``aptrank etl``: options documented, exit codes (0 ok, 1 bad input/config, 2 gate failed with
outputs kept), and a generated log with injected bad rows balances exactly against its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import typer
import yaml
from etl_helpers import HANDMADE_CONFIG, handmade_source
from typer.testing import CliRunner, Result

from aptrank.data.synthetic import GeneratorConfig, generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "etl"


def _run(app: typer.Typer, *args: str) -> Result:
    return CliRunner().invoke(app, ["etl", *args], env={"COLUMNS": "400"})


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "handmade.yaml"
    cfg.write_text(yaml.safe_dump(HANDMADE_CONFIG))
    return handmade_source(root / "src"), cfg


def test_help_documents_every_option(app: typer.Typer) -> None:
    result = _run(app, "--help")
    assert result.exit_code == 0
    for option in ("--source", "--input", "--out", "--config", "--max-reject-rate", "--max-duplicate-rate", "--quiet"):
        line = next(x for x in result.output.splitlines() if option in x)
        assert len(line.split(option, 1)[1].strip()) > 10, f"{option} has no help text"


def test_run_prints_summary_and_progress(app: typer.Typer, handmade: tuple[Path, Path], tmp_path: Path) -> None:
    src, cfg = handmade
    result = _run(app, "--source", "canonical", "--input", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("{"))
    printed = json.loads(line)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert printed["content_hash"] == summary["content_hash"] and printed["accepted_rows"] == 8
    assert "[etl] point-in-time done" in result.output


def test_gate_failure_exits_2_and_keeps_outputs(app: typer.Typer, handmade: tuple[Path, Path], tmp_path: Path) -> None:
    src, cfg = handmade
    out = tmp_path / "o"
    events = pl.read_parquet(src / "events.parquet")
    bad = src.parent / "bad"
    bad.mkdir()
    pl.concat([events, events.head(1)]).write_parquet(bad / "events.parquet")  # 1 duplicate of 9 rows
    for f in ("items.parquet", "users.parquet"):
        (bad / f).write_bytes((src / f).read_bytes())
    result = _run(
        app,
        "--source",
        "canonical",
        "--input",
        str(bad),
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--max-duplicate-rate",
        "0.1",
        "--quiet",
    )
    assert result.exit_code == 2
    assert "duplicate impression rate 11.1111% exceeds --max-duplicate-rate 10.0000%" in result.output
    assert (out / "rejects.parquet").is_file() and (out / "summary.json").is_file()
    assert pl.read_parquet(out / "rejects.parquet")["reason"].to_list() == ["duplicate_impression"]


def test_bad_input_exits_1_naming_the_problem(app: typer.Typer, handmade: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = handmade
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("features:\n  windowz: [1d]\n")
    result = _run(app, "--source", "canonical", "--input", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert result.exit_code == 2 and f"{cfg}: features.windowz: unknown key" in result.output
    result = _run(app, "--source", "canonical", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "input path does not exist" in result.output
    result = _run(app, "--source", "csv", "--input", str(src), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "'csv' is not one of canonical, kuairand" in result.output
    out = str(tmp_path / "o")
    result = _run(app, "--source", "canonical", "--input", str(src), "--out", out, "--max-reject-rate", "3")
    assert result.exit_code == 2 and "3.0 is not in [0, 1]" in result.output


def test_generated_bad_rows_balance(app: typer.Typer, tmp_path: Path) -> None:
    """``aptrank generate --bad-rows``: every injected bad row is rejected for its own reason."""
    manifest = generate(
        tmp_path / "gen", GeneratorConfig(events=40_000, users=500, items=300, bad_rows=0.08, seed=5), progress=False
    )
    result = _run(
        app,
        "--source",
        "canonical",
        "--input",
        str(tmp_path / "gen"),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(CONFIGS / "synthetic.yaml"),
        "--quiet",
    )
    assert result.exit_code == 2, "8% bad rows exceed the default gate"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    injected = {("duplicate_impression" if k == "duplicate" else k): v for k, v in manifest["bad_rows"].items()}
    injected["implausible_ts"] = 0  # the generator injects none; the time range rejects its 1970/2100 rows first
    assert summary["rejects_by_reason"] == injected
    assert summary["input_rows"] == manifest["rows"]["events"]
    assert summary["accepted_rows"] == manifest["rows"]["clean_events"]
    rates = {t: r["observed_clean"] for t, r in manifest["label_rates"].items()}
    assert summary["label_rates"]["all"] == pytest.approx(rates, abs=1e-12)
