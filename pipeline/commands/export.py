"""``aptrank export``: a trained run -> ONNX, behind the PyTorch-vs-ONNX parity gate.

``--run-id`` is a local run folder or an MLflow run id (:mod:`aptrank.pipeline.runs`). The parity
rows are the first ``--parity-rows`` rows of the ETL output's ``test`` split: ``--features`` or,
failing that, the run's ``features/`` artifact or its config's ``data.features``. The library:
:func:`aptrank.pipeline.run_export.export_run`; this module parses options and maps errors to exit codes.

Exit codes: 0 exported; 1 the parity gate failed (nothing written at ``--out``); 2 bad input (run,
features or FeatureSpec mismatch; the message names the file and the rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

PARITY_EXIT_CODE = 1
INPUT_EXIT_CODE = 2


def export_command(
    run_id: Annotated[str, typer.Option("--run-id", help="local run folder (trainer run_dir) or MLflow run id")],
    out: Annotated[Path, typer.Option(help="ONNX file to write (only when the parity gate passes)")],
    features: Annotated[Path | None, typer.Option(help="ETL output the run was trained on (parity rows)")] = None,
    parity_rows_: Annotated[int, typer.Option("--parity-rows", help="test-split rows compared")] = 10_000,
    tolerance: Annotated[float, typer.Option(help="max |p_onnx - p_torch| allowed")] = 1e-5,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")] = None,
    fold_rows: Annotated[
        int | None,
        typer.Option(
            help="fold categorical features with small tables into the first dense layer, up to this many "
            "rows per folded table; 0 = off [default: models.export.fold.FOLD_MAX_ROWS, 512]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a trained model to ONNX; refuse it when any probability differs from PyTorch."""
    from aptrank.data.spec import SpecError
    from aptrank.models.export import ParityError
    from aptrank.pipeline.run_export import export_run

    try:
        exported = export_run(
            run_id,
            out,
            features=features,
            parity_rows=parity_rows_,
            tolerance=tolerance,
            tracking_uri=tracking_uri,
            fold_rows=fold_rows,
        )
    except ParityError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(PARITY_EXIT_CODE) from None
    except (SpecError, FileNotFoundError, ValueError) as e:  # RunError and bad arguments are ValueErrors
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(INPUT_EXIT_CODE) from None
    result = exported.result
    typer.echo(
        json.dumps(
            {
                "out": str(result.path),
                "run": exported.source,
                "spec_hash": result.spec_hash,
                "tasks": list(result.task_names),
                "parity": result.parity.to_dict(),
            }
        )
    )


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the ``aptrank`` app."""
    app.command("export")(export_command)
