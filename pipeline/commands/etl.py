"""``aptrank etl``: raw logs -> validated, labelled, point-in-time examples + FeatureSpec + snapshot.

Exit codes, as every command's: 0 ok; 2 bad input or config (the message names the
file/column/key and the rule), a data-quality gate failed (``--max-reject-rate`` /
``--max-duplicate-rate``; the outputs are swapped in marked ``GATE_FAILED``, so the rejects can be
inspected and ``train`` refuses them) or a daily run was refused (no state for the day before, a
gap, or a state from another config/FeatureSpec: the message says how to backfill); 1 any other
failure.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from aptrank.data.adapters import SOURCES, SourceError
from aptrank.data.etl.config import EtlConfig, EtlConfigError, load_config
from aptrank.data.etl.daily import StateError, run_days
from aptrank.data.etl.engines import ENGINES
from aptrank.data.etl.run import run_etl, with_gates
from aptrank.data.etl.staged import run_staged
from aptrank.data.schema import SchemaError
from aptrank.data.spec import SpecError

GATE_EXIT_CODE = 2
INPUT_EXIT_CODE = 2  # bad input or config, as for train, run, score and export


def etl_command(
    source: Annotated[
        str, typer.Option(help=f"input format: {' or '.join(sorted(SOURCES))} (canonical = aptrank generate output)")
    ],
    input: Annotated[Path, typer.Option("--input", help="source folder (KuaiRand files or canonical events/)")],
    out: Annotated[Path, typer.Option(help="output folder (train/valid/test, snapshot, vocab, spec, summary)")],
    config: Annotated[
        Path | None,
        typer.Option(help="ETL config YAML (e.g. configs/etl/kuairand.yaml); default: built-in defaults"),
    ] = None,
    max_reject_rate: Annotated[
        float | None,
        typer.Option(
            help="fail (exit 2) when validity rejects exceed this share of input rows "
            "(duplicates excluded; default from config, 0.01)"
        ),
    ] = None,
    max_duplicate_rate: Annotated[
        float | None,
        typer.Option(
            help="fail (exit 2) when duplicate impressions exceed this share of input rows (default from config, 0.05)"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress lines on stderr")] = False,
    date: Annotated[
        str | None,
        typer.Option(
            help="incremental daily run: add day YYYY-MM-DD (config time zone) to --out from the state of the day "
            "before (out/state/); see data/etl/daily.py"
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="with --date: backfill every day from --date to this day (YYYY-MM-DD)")
    ] = None,
    bootstrap: Annotated[
        bool, typer.Option(help="with --date: a full run through that day that writes the first daily state")
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="where the point-in-time features run: polars (this process) or spark (PySpark); default: config"
        ),
    ] = None,
) -> None:
    """Validate, label and featurise an impression log into time-split training examples."""
    if source not in SOURCES:
        raise typer.BadParameter(f"'{source}' is not one of {', '.join(sorted(SOURCES))}", param_hint="--source")
    for name, value in (("--max-reject-rate", max_reject_rate), ("--max-duplicate-rate", max_duplicate_rate)):
        if value is not None and not 0 <= value <= 1:
            raise typer.BadParameter(f"{value} is not in [0, 1]", param_hint=name)
    days = daily_range(date, until, bootstrap)
    if engine is not None and engine not in ENGINES:
        raise typer.BadParameter(f"'{engine}' is not one of {', '.join(ENGINES)}", param_hint="--engine")
    say = None if quiet else (lambda msg: typer.echo(msg, err=True))
    try:
        cfg = load_config(config) if config is not None else EtlConfig()
        gates = {"max_reject_rate": max_reject_rate, "max_duplicate_rate": max_duplicate_rate}
        cfg = cfg.model_copy(update={"engine": engine or cfg.engine})
        if days is None:
            result = run_staged(lambda stage: run_etl(source, input, stage, cfg, **gates, progress=say), out)
        else:
            cfg = with_gates(cfg, **gates)
            quiet_say = say or (lambda _msg: None)
            result = run_days(source, input, out, cfg, *days, bootstrap_first=bootstrap, say=quiet_say)[-1]
    except StateError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(GATE_EXIT_CODE) from None
    except (EtlConfigError, SourceError, SchemaError, SpecError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(INPUT_EXIT_CODE) from None
    s = result.summary
    typer.echo(
        json.dumps(
            {
                k: s[k]
                for k in (
                    "input_rows",
                    "accepted_rows",
                    "rejected_rows",
                    "validity_reject_rate",
                    "duplicate_rate",
                    "split_rows",
                    "content_hash",
                )
            }
        )
    )
    if not result.passed:
        for failure in s["gates"]["failures"]:
            typer.echo(f"error: {failure}; outputs kept in {out} for inspection, marked GATE_FAILED", err=True)
        raise typer.Exit(GATE_EXIT_CODE)


def daily_range(date: str | None, until: str | None, bootstrap: bool) -> tuple[dt.date, dt.date] | None:
    """(first, last) day of an incremental run or backfill; None for a full run."""
    if date is None:
        if until is not None or bootstrap:
            raise typer.BadParameter("needs --date", param_hint="--until/--bootstrap")
        return None
    days = []
    for name, value in (("--date", date), ("--until", until or date)):
        try:
            days.append(dt.date.fromisoformat(value))
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not a date YYYY-MM-DD", param_hint=name) from None
    if days[1] < days[0]:
        raise typer.BadParameter(f"{until} is before --date {date}", param_hint="--until")
    return days[0], days[1]


def register(app: typer.Typer) -> None:
    """Add the ``etl`` command to the ``aptrank`` app."""
    app.command("etl")(etl_command)
