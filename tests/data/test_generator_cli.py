"""``aptrank generate``: every option documented, options reach the manifest, bad parameters and
existing output fail naming the option, and the config validates every rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from aptrank.data.synthetic import ConfigError, GeneratorConfig


def _run(app: typer.Typer, *args: str) -> Result:
    # a wide terminal keeps each help text on one line
    return CliRunner().invoke(app, ["generate", *args], env={"COLUMNS": "400"})


def test_help_documents_every_option(app: typer.Typer) -> None:
    result = _run(app, "--help")
    assert result.exit_code == 0
    names = list(GeneratorConfig.model_fields)
    for option in ["out", *names, "overwrite", "progress"]:
        assert f"--{option.replace('_', '-')}" in result.output, option
    for name in names:  # the help text of each option comes from the config
        assert GeneratorConfig.help(name) in result.output, name


def test_options_reach_the_manifest(app: typer.Typer, tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--users", "80", "--items", "60", "--events", "2000", "--days", "2"]
    args += ["--seed", "9", "--task-correlation", "-0.5", "--bad-rows", "0.04", "--truth", "--no-progress"]
    result = _run(app, *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    expected = GeneratorConfig(
        users=80, items=60, events=2000, days=2, seed=9, task_correlation=-0.5, bad_rows=0.04, truth=True
    )
    assert manifest["params"] == expected.to_dict()
    assert f"wrote 2000 events (80 bad) in {len(manifest['files'])} files" in result.output


def test_bad_parameter_names_the_option(app: typer.Typer, tmp_path: Path) -> None:
    result = _run(app, "--out", str(tmp_path), "--task-correlation", "1.5")
    assert result.exit_code == 2
    assert "--task-correlation" in result.output and "must be in [-1, 1]" in result.output
    assert not (tmp_path / "events").exists()


def test_existing_output_names_out(app: typer.Typer, tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--events", "100", "--users", "10", "--items", "10", "--no-progress"]
    assert _run(app, *args).exit_code == 0
    again = _run(app, *args)
    assert again.exit_code == 2 and "--out" in again.output and "already holds generator output" in again.output
    assert _run(app, *args, "--overwrite").exit_code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, "users: 0 must be >= 1"),
        ({"events": 2.5}, "events: expected an integer, got 2.5"),
        ({"users": "many"}, "users: expected an integer, got 'many'"),
        ({"truth": "yes"}, "truth: expected true or false, got 'yes'"),
        ({"factors": 2}, "factors: 2 must be >= 3"),
        ({"click_rate": 1.0}, "click_rate: 1.0 must be in (0, 1)"),
        ({"bad_rows": 0.6}, "bad_rows: 0.6 must be in [0, 0.5]"),
        ({"like_alignment": -0.1}, "like_alignment: -0.1 must be in [0, 1]"),
        ({"start": "2022-13-01"}, "start: '2022-13-01' is not a date"),
        ({"start": "1970-01-02"}, "start: '1970-01-02' with days must keep the log within 2000-01-01"),
        ({"chunk_size": 10, "rows_per_part": 5}, "rows_per_part: 5 must be >= chunk_size"),
        ({"events": 30_000_000, "days": 1}, "events: 30000000 gives 30000000 events per day"),
    ],
)
def test_config_rules(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        GeneratorConfig(**change)
    assert message in str(err.value)
    assert err.value.param == message.split(":")[0]
