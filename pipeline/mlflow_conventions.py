"""What an MLflow user expects of a training run, beyond params and metrics (used by
:class:`pipeline.tracking.TrackedRun`): the source tags, the example sets as dataset inputs with
their digests, the experiment typed for model training, and a Markdown description.

MLflow docs: https://mlflow.org/docs/latest/ml/tracking/ (system tags ``mlflow.source.*``,
``mlflow.user``, ``mlflow.note.content``; ``log_inputs`` and datasets).
"""

from __future__ import annotations

import getpass
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

SPLITS = ("train", "valid", "test")
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""The experiment tag of a model-training experiment (the MLflow 3 UI's other kind is GenAI)."""
DIGEST_CHARS = 16  # MLflow's dataset digest column holds 36 characters


def source_tags() -> dict[str, str]:
    """``mlflow.source.name`` (the command line, ``aptrank ...`` for the CLI), type JOB, the user."""
    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    program = "aptrank" if argv0 in ("aptrank", "cli.py", "__main__.py") else argv0
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {
        MLFLOW_SOURCE_NAME: shlex.join([program, *sys.argv[1:]])[:500],
        MLFLOW_SOURCE_TYPE: "JOB",
        MLFLOW_USER: user,
    }


def split_dataset(features: Path, split: str, name: str) -> DatasetInput:
    """The example files of ``split`` as an MLflow dataset input: digest of their bytes
    (:func:`pipeline.provenance.fingerprint`), source = the folder, schema = the columns, profile = rows."""
    import pyarrow.parquet as pq

    from aptrank.data.etl.run import example_files
    from aptrank.pipeline.provenance import fingerprint

    files = example_files(features, split)
    schema = pq.read_schema(files[0]) if files else None
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    columns = [{"name": f.name, "type": str(f.type)} for f in schema] if schema is not None else []
    dataset = Dataset(
        name=f"{name}-{split}",
        digest=fingerprint(features, (split,))[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": (features / split).resolve().as_uri()}),
        schema=json.dumps({"mlflow_colspec": columns}),
        profile=json.dumps({"num_rows": rows, "num_files": len(files)}),
    )
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, split)])


def headline(title: str, evaluation: Mapping[str, Any]) -> str:
    """``title`` and the AUC per task of each split of ``evaluation`` (Markdown, one line per split)."""
    lines = [f"**{title}**"]
    for split, block in evaluation.items():
        if isinstance(block, Mapping) and isinstance(block.get("tasks"), Mapping) and split != "popularity":
            aucs = ", ".join(f"{t} {float(m['auc']):.4f}" for t, m in block["tasks"].items() if "auc" in m)
            lines.append(f"- {split} AUC: {aucs}")
    return "\n".join(lines)
