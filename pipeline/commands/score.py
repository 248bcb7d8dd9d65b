"""``aptrank score``: batch-score candidate rows with an ONNX model (a file or ``models:/NAME@ALIAS``).

Output: every input column plus ``p_<task>`` per task and ``score`` (weighted fusion: ``--config``'s
``scoring.weights``, overridden by ``--weight TASK=W``; without either, the weights registered with
the model, else the mean; the weights used are printed on stderr at start). Rows that cannot be
scored go to ``--rejects`` with a ``reason``; ``input_rows = scored_rows + rejected_rows`` (printed
as JSON). The feature snapshot is ``--features`` (the ETL output), else the one the model bundles
(a registered scorer model), else the model run's ``features/`` artifact. A ``models:/`` URI needs
``--tracking-uri`` or ``MLFLOW_TRACKING_URI``. A model whose SHA-256 is missing (no ``.sha256``
sidecar, no registry tag) or does not match is refused (exit 2); ``--allow-unverified-model`` loads
one without a digest, with a warning.

``--engine spark`` (or ``scoring.engine: spark`` in ``--config``) scores on Spark with
``mlflow.pyfunc.spark_udf`` over a registered scorer model (:mod:`aptrank.pipeline.spark_scoring`):
``--input`` may be any path or URI Spark reads or ``table:NAME``, ``--output`` is a Parquet folder,
``--partition-by COLUMN`` (repeatable) splits it into ``COLUMN=VALUE/`` folders.

Exit codes: 0 done; 2 bad input (model, features, candidates, weights, pyspark missing: the message
names which); 1 the Spark job failed after it started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aptrank.pipeline.commands.options import AllowUnverifiedModel

if TYPE_CHECKING:
    from aptrank.serving.batch_scoring import BatchReport

INPUT_EXIT_CODE = 2
FAILURE_EXIT_CODE = 1

SOURCE_HELP = "candidate format: kuairand (a KuaiRand folder) or canonical (Parquet/CSV in canonical columns)"


def score_command(
    model: Annotated[str, typer.Option(help="ONNX file or models:/NAME@ALIAS (e.g. @champion) or models:/NAME/N")],
    source: Annotated[str, typer.Option(help=SOURCE_HELP)],
    input: Annotated[
        str, typer.Option("--input", help="candidate rows (file or folder; spark: also a URI, table:NAME)")
    ],
    output: Annotated[str, typer.Option(help="Parquet file (spark: folder, or URI): input columns + p_<task> + score")],
    rejects: Annotated[str | None, typer.Option(help="unscorable rows + reason (OUTPUT.rejects.parquet)")] = None,
    features: Annotated[Path | None, typer.Option(help="ETL output (feature_spec.json, vocab/, snapshot/)")] = None,
    config: Annotated[Path | None, typer.Option(help="job config YAML whose scoring.weights fuse the tasks")] = None,
    weight: Annotated[list[str] | None, typer.Option(help="TASK=W fusion weight (repeatable)")] = None,
    chunk_rows: Annotated[int, typer.Option(help="rows per chunk (memory follows this)")] = 131_072,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads per chunk")] = 1,
    workers: Annotated[
        int | None, typer.Option(help="chunks scored at a time in threads (default: the CPU cores)", min=1)
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    engine: Annotated[
        str | None, typer.Option(help="local (threads here) or spark (spark_udf); default: --config's scoring.engine")
    ] = None,
    partition_by: Annotated[
        list[str] | None, typer.Option(help="spark: output partition column (repeatable), e.g. tab")
    ] = None,
    allow_unverified_model: AllowUnverifiedModel = False,
) -> None:
    """Score candidates in chunks; write scores and rejects; print the counts as JSON."""
    from aptrank.data.adapters import SourceError
    from aptrank.data.schema import SchemaError
    from aptrank.data.spec import SpecError
    from aptrank.pipeline.scoring import fusion_weights, load_scorer, scoring_engine
    from aptrank.pipeline.spark_scoring import SparkJobError
    from aptrank.serving.batch_scoring import score_chunks
    from aptrank.serving.candidates import SOURCES, count_rows, iter_chunks, scan_candidates
    from aptrank.serving.errors import ServingError

    if source not in SOURCES:
        raise typer.BadParameter(f"'{source}' is not one of {', '.join(SOURCES)}", param_hint="--source")
    rejects = rejects or default_rejects(output)
    try:
        weights = fusion_weights(config, weight)
        chosen = scoring_engine(config, engine)
        if chosen == "spark":
            report = score_spark(model, source, input, output, rejects, features, weights, tracking_uri, partition_by)
            typer.echo(json.dumps(report.to_dict()))
            return
        if chosen != "local":
            raise ValueError(f"--engine '{chosen}' is not one of local, spark")
        if partition_by:
            raise ValueError("--partition-by: only with --engine spark (the local scorer writes one file)")
        with load_scorer(
            model,
            features=features,
            tracking_uri=tracking_uri,
            weights=weights,
            threads=threads,
            allow_unverified=allow_unverified_model,
        ) as opened:
            scorer = opened.scorer
            typer.echo(f"fusion weights {scorer.fusion.as_dict()} ({scorer.weights_origin})", err=True)
            frame = scan_candidates(source, input)
            report = score_chunks(
                scorer,
                iter_chunks(frame, chunk_rows),
                output,
                rejects,
                total_rows=count_rows(frame),
                progress=progress,
                workers=workers or len(os.sched_getaffinity(0)),
                schema=frame.collect_schema(),
            )
    except (ServingError, SourceError, SchemaError, SpecError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(INPUT_EXIT_CODE) from None
    except SparkJobError as e:  # the Spark job failed after it started
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(FAILURE_EXIT_CODE) from None
    typer.echo(json.dumps(report.to_dict()))


def default_rejects(output: str) -> str:
    """``OUTPUT.rejects.parquet`` beside ``output`` (a path or a URI; its last suffix replaced)."""
    head, sep, name = output.rstrip("/").rpartition("/")
    return f"{head}{sep}{Path(name).stem}.rejects.parquet"


def score_spark(
    model: str,
    source: str,
    input: str,
    output: str,
    rejects: str,
    features: Path | None,
    weights: dict[str, float],
    tracking_uri: str | None,
    partition_by: list[str] | None,
) -> BatchReport:
    """``--engine spark``: the checks that need no Spark first (pyspark, options, input, model)."""
    import tempfile

    from aptrank.pipeline.spark_scoring import candidate_paths, open_model, require_pyspark, score_on_spark

    require_pyspark()
    if source != "canonical":
        raise ValueError(f"--source {source}: --engine spark reads canonical candidates (Parquet, CSV, table:NAME)")
    if features is not None:
        raise ValueError("--features: --engine spark scores with the snapshot registered with the model")
    candidate_paths(input)  # a missing local input is refused before the model download and Spark
    with tempfile.TemporaryDirectory(prefix="aptrank-spark-model-") as workspace:
        opened = open_model(model, tracking_uri, Path(workspace), weights)
        typer.echo(f"fusion weights {opened.weights} (registered with the model {opened.version})", err=True)
        return score_on_spark(input, opened, output, rejects, partition_by or [])


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to the ``aptrank`` app."""
    app.command("score")(score_command)
