"""``aptrank experiment``: run a research grid (configs/grids/*.yaml) as MLflow child runs under one
parent run; write ``results.md``, ``results.json`` and plots into the work dir (``--docs``: also
the grid's section of ``docs/results.md``, other sections kept, and ``docs/results/<name>/``). A
rerun skips the cells already finished.

Exit codes: 0 ok, 1 some cells failed (their loss diverged; rerun to retry them) or a tracking /
lock error, 2 a bad grid file or dataset.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("experiment")
    def experiment(
        grid: Annotated[Path, typer.Option(help="Grid YAML, e.g. configs/grids/research.yaml.")],
        workdir: Annotated[
            Path | None,
            typer.Option(
                help="Work dir (datasets, cells, MLflow store, results); default work/experiment/<grid name>."
            ),
        ] = None,
        workers: Annotated[
            int | None, typer.Option(min=1, help="Training processes (default: the grid's 'workers').")
        ] = None,
        docs: Annotated[
            bool,
            typer.Option(
                help="Also write the grid's section of docs/results.md and its plots to docs/results/<name>/."
            ),
        ] = False,
    ) -> None:
        """Run (or resume) a research grid and write its tables and plots."""
        from aptrank.pipeline.experiment import GridError, load_grid, run_grid
        from aptrank.pipeline.experiment.datasets import DatasetError
        from aptrank.pipeline.lock import LockHeldError
        from aptrank.pipeline.mlflow_store import TrackingError

        def log(msg: str) -> None:
            typer.echo(msg, err=True)

        try:
            spec = load_grid(grid)
        except GridError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        work = workdir or Path("work") / "experiment" / spec.name
        command = "aptrank " + shlex.join(sys.argv[1:])
        try:
            outcome = run_grid(
                spec, work, command=command, workers=workers, docs=Path("docs") if docs else None, log=log
            )
        except DatasetError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        except (LockHeldError, TrackingError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(str(work / "results.md"))
        if not outcome.ok:
            raise typer.Exit(1)
