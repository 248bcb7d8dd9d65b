"""Build, save and log the scorer model of a job run (:mod:`serving.pyfunc_model`).

The job hands over the parity-gated ONNX file, the ETL output and the fusion weights;
:func:`assemble` lays out the artifacts (the ONNX graph, ``features/`` = FeatureSpec + vocabularies +
snapshot, ``fusion.json``), :func:`raw_split_rows` reads real raw candidates of a split (ids and ``ts``
from the ETL's split files, context columns as the source has them, labels), and
:class:`ScorerModel` saves or logs the ``python_function`` model with a signature on the raw columns
(types included), named outputs (``p_<task>``, ``score``) and an input example of real test rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.spec import FeatureSpec
from aptrank.serving.fusion import FUSION_FILE, write_fusion
from aptrank.serving.model_integrity import sidecar
from aptrank.serving.pyfunc_model import FEATURES_ARTIFACT, ONNX_ARTIFACT, ScorerFiles

FEATURE_PARTS = ("feature_spec.json", "vocab", "snapshot")
"""What a scorer needs of an ETL output (not the example splits)."""
KEYS = ("user_id", "item_id", "ts")
EXAMPLE_ROWS = 5
EXAMPLE_SPLIT = "test"
SCORER_DIR = "scorer_model"
"""The scorer model's artifacts under the job's run folder."""
RUNTIME_PACKAGES = ("mlflow", "onnxruntime", "polars", "pyarrow", "pandas", "numpy", "aptrank")
"""The model's pip requirements (pinned to this environment): what loading and predicting import."""


def copy_features(features: str | Path, dest: str | Path) -> Path:
    """The scorer part of an ETL output (:data:`FEATURE_PARTS`) copied to ``dest``."""
    src, out = Path(features), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for part in FEATURE_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, out / part)
        elif (src / part).is_file():
            shutil.copyfile(src / part, out / part)
        else:
            raise FileNotFoundError(f"{src / part}: the scorer model needs '{part}' of the ETL output")
    return out


def assemble(
    onnx_path: str | Path, features: str | Path, weights: Mapping[str, float], dest: str | Path
) -> ScorerFiles:
    """Artifacts of a scorer model under ``dest`` (named as the model folder names them); the ONNX
    graph's ``.sha256`` sidecar comes along, so the model's loader verifies it."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out / ONNX_ARTIFACT)
    shutil.copyfile(sidecar(onnx_path), sidecar(out / ONNX_ARTIFACT))  # the export's digest travels along
    return ScorerFiles(
        out / ONNX_ARTIFACT, copy_features(features, out / FEATURES_ARTIFACT), write_fusion(out / FUSION_FILE, weights)
    )


def raw_split_rows(source: str, input_path: str | Path, features: str | Path, split: str) -> pl.DataFrame:
    """The examples of ``split`` as raw candidates: ``user_id``, ``item_id``, ``ts`` and labels from
    the ETL's split files (its accepted, deduplicated rows, in order), the context columns from the
    source events (the split files hold them encoded)."""
    from aptrank.data.adapters import load_source
    from aptrank.data.etl.run import example_files

    spec = FeatureSpec.read(features)
    context = list(spec.extras.get("context", []))
    labels = [f"label_{t}" for t in spec.task_names]
    files = example_files(features, split)
    if not files:
        raise FileNotFoundError(f"{features}/{split}: no example files for split '{split}'")
    rows = pl.scan_parquet(files).select(*KEYS, *labels).collect()
    if not context:
        return rows
    events = load_source(source, input_path).events.select(*KEYS, *context)
    events = events.with_columns(pl.col("ts").cast(rows.schema["ts"])).unique(KEYS, keep="first").collect()
    out = rows.join(events, on=list(KEYS), how="left", maintain_order="left")
    return out.select(*KEYS, *context, *labels)


def to_pandas_candidates(rows: pl.DataFrame, spec: FeatureSpec) -> Any:
    """Candidates as the pyfunc takes them: the raw columns, ``ts`` a naive UTC datetime (MLflow
    signatures have no time zone)."""
    cols = [*KEYS, *spec.extras.get("context", [])]
    return rows.select(cols).with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas()


def requirements() -> list[str]:
    """:data:`RUNTIME_PACKAGES` pinned to the installed versions."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]


@dataclass(frozen=True)
class ScorerModel:
    """A scorer model ready to save or log: its artifacts and an input example (pandas)."""

    files: ScorerFiles
    example: Any

    def _model_kwargs(self) -> dict[str, Any]:
        from mlflow.models import infer_signature
        from mlflow.pyfunc import PythonModelContext

        from aptrank.serving.pyfunc_model import RankerModel

        model = RankerModel()
        model.load_context(PythonModelContext(self.files.artifacts(), None))
        signature = infer_signature(self.example, model.predict(None, self.example))
        return {
            "python_model": RankerModel(),
            "artifacts": self.files.artifacts(),
            "signature": signature,
            "input_example": self.example,
            "pip_requirements": requirements(),
        }

    def save(self, path: str | Path) -> Path:
        """An MLflow model folder at ``path`` (e.g. for an evaluation with another snapshot)."""
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(str(path), **self._model_kwargs())
        return Path(path)

    def log(self, client: Any, run_id: str) -> tuple[str, str | None]:
        """Log to ``run_id`` as the run's logged model; return (registry source URI, model id).
        (``Model.log`` with the pyfunc flavor is what ``mlflow.pyfunc.log_model`` calls; it takes the
        run id, so no process-wide active run is needed.)"""
        import mlflow.pyfunc
        from mlflow.models import Model

        from aptrank.pipeline.registry import MODEL_ARTIFACT, log_logged_model

        kwargs = self._model_kwargs()
        return log_logged_model(
            client,
            run_id,
            lambda model_id: Model.log(
                artifact_path=None,
                name=MODEL_ARTIFACT,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=model_id,
                **kwargs,
            ),
        )


def model_fusion_weights(cfg: Any, onnx_path: Path) -> dict[str, float]:
    """The config's ``scoring.weights`` checked against the exported model's tasks (equal when empty)."""
    from aptrank.serving.fusion import Fusion
    from aptrank.serving.onnx_model import load_onnx

    return Fusion.build(load_onnx(onnx_path).task_names, cfg.scoring.weights).as_dict()


def build_scorer_model(
    cfg: Any, features: Path, onnx_path: Path, run_dir: Path, split: str = "test"
) -> tuple[ScorerModel, dict[str, Any]]:
    """The job's scorer model (production snapshot = ``features``' own, fusion weights = the config's
    ``scoring.weights`` checked against the model's tasks, equal when empty; input example = the
    first real rows of the test split) and its evaluation on ``split`` as served
    (:func:`pipeline.served_evaluation.evaluate_served`)."""
    from aptrank.pipeline.served_evaluation import evaluate_served

    weights = model_fusion_weights(cfg, onnx_path)
    files = assemble(onnx_path, features, weights, run_dir / SCORER_DIR)
    spec = FeatureSpec.read(features)
    rows = {s: raw_split_rows(cfg.data.source, cfg.data.input, features, s) for s in {split, EXAMPLE_SPLIT}}
    example = to_pandas_candidates(rows[EXAMPLE_SPLIT].head(EXAMPLE_ROWS), spec)
    return ScorerModel(files, example), evaluate_served(cfg, features, onnx_path, weights, split, rows[split])


UI_PORT = 5000


def follow_up_commands(
    tracking_uri: str,
    name: str,
    source: str,
    input_path: str | Path,
    workdir: Path,
    experiment_id: str | None = None,
) -> dict[str, str]:
    """Shell commands that use the champion, with the tracking URI inline, so they run when pasted
    (absolute paths; ``aptrank`` and ``mlflow`` on the PATH, e.g. ``.venv/bin``), and the UI page of
    the experiment (``workflowType=machine_learning``: MLflow 3.17's UI picks GenAI or model-training
    pages from that toggle, not from the experiment's ``mlflow.experimentKind`` tag)."""
    import shlex

    model = f"models:/{name}@champion"
    uri = shlex.quote(tracking_uri)
    data = shlex.quote(str(Path(input_path).resolve()))
    out = shlex.quote(str((workdir / "scores.parquet").resolve()))
    page = f"#/experiments/{experiment_id}" if experiment_id else "#/experiments"
    return {
        "ui": f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {UI_PORT}",
        "ui_page": f"http://127.0.0.1:{UI_PORT}/{page}?workflowType=machine_learning",
        "score": f"aptrank score --model {model} --tracking-uri {uri} --source {source} --input {data} --output {out}",
        "serve": f"aptrank serve --model {model} --tracking-uri {uri}",
        "mlflow_serve": f"MLFLOW_TRACKING_URI={uri} mlflow models serve -m {model} --env-manager local --port 5001",
    }
