"""``aptrank run``: the scheduled job (ETL -> train -> evaluate -> export -> register -> gate).

The last line on stdout is one JSON object: ``run_id``, ``model_uri``, ``champion_uri``, the metrics
and the gate decision (plus ``error`` when the job failed). Exit codes: 0 ok, 1 failure, 2 bad config
or data, 3 the gate refused the challenger.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from aptrank.pipeline.config import ConfigError, load_config


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        config: Annotated[Path, typer.Option(help="Job config YAML, e.g. configs/demo.yaml.")],
        workdir: Annotated[
            Path | None,
            typer.Option(
                help="Work dir (ETL output, runs, SQLite MLflow store, artifacts, locks); default work/<job name>."
            ),
        ] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: key=value.")] = None,
        date: Annotated[
            str | None,
            typer.Option(
                help="Logical date YYYY-MM-DD: the ETL adds that day incrementally (work dir daily/; "
                "the first run bootstraps, a gap exits 2 with the backfill command)."
            ),
        ] = None,
    ) -> None:
        """Run the scheduled job once; idempotent per data window, never two at once per config."""
        from aptrank.pipeline.job import JobError, JobExit, run_job
        from aptrank.pipeline.lock import LockHeldError
        from aptrank.pipeline.mlflow_store import TrackingError

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        try:
            cfg = load_config(config, set_ or [])
        except ConfigError as e:
            _finish(JobExit.BAD_INPUT, {"error": str(e)})
        work = workdir or Path("work") / cfg.name
        try:
            day = dt.date.fromisoformat(date) if date is not None else None
        except ValueError:
            _finish(JobExit.BAD_INPUT, {"error": f"--date: '{date}' is not a date YYYY-MM-DD"})
        try:
            outcome = run_job(cfg, work, log, day)
        except JobError as e:
            _finish(e.code, {"error": str(e)})
        except (LockHeldError, TrackingError) as e:
            _finish(JobExit.FAILURE, {"error": str(e)})
        if outcome.code in (JobExit.OK, JobExit.GATE_REFUSED) and outcome.summary.get("follow_up"):
            log("[run] done. Next (paste as is; aptrank and mlflow from the venv, e.g. .venv/bin):")
            for what, command in outcome.summary["follow_up"].items():
                log(f"  {what:>12}:  {command}")
        _finish(outcome.code, outcome.summary)


def _finish(code: int, summary: dict) -> NoReturn:
    """The JSON summary line on stdout, after one ``error:`` line on stderr when the job failed; exit."""
    if summary.get("error"):
        typer.echo(f"error: {summary['error']}", err=True)
    sys.stdout.write(json.dumps({"exit_code": int(code), **summary}, default=str) + "\n")
    sys.stdout.flush()
    raise typer.Exit(int(code))
