"""Model registry (DESIGN.md contract 6): one registered model per job config; each successful run
adds a version with the alias ``challenger``; only the gate (:mod:`aptrank.pipeline.gate`) moves ``champion``.

Order of a registration, so a failure never leaves a half-registered version behind:

1. the model is logged to the run: the job's scorer model (:class:`pipeline.scorer_model.ScorerModel`,
   a ``python_function`` model over raw candidate rows, anything with a ``log(client, run_id)``
   method); an ``.onnx`` file with ``mlflow.onnx.log_model`` (signature and input example read from
   the graph's inputs; refused when a weight is NaN/Inf); any other file as the run artifact ``model/``;
2. the version is created in one call with its evaluation tags (AUC per task and of the popularity
   baseline, split, evaluation window), the idempotency tag ``aptrank.input_key`` (:func:`version_key`)
   the model's content digest ``aptrank.model_sha256`` (:func:`digest_tags`; scorers verify it) and
   the step tags ``aptrank.step.logged`` and ``aptrank.step.created``;
3. the alias ``challenger`` is set, then the step tag ``aptrank.step.challenger`` (the promotion
   does this step itself, so a crash test can stop between steps 2 and 3).

The step tags make a version's progress durable: :mod:`aptrank.pipeline.promotion` finishes the steps
a killed job left undone (issue #20), so :func:`find_version` finds versions in any state. A failure
raised in steps 2-3 deletes what was created (the version, and the registered model when this call
created it); the error says what was undone, or what could not be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mlflow
import mlflow.artifacts
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.mlflow_store import TrackingError, check_reachable, fluent_uri, mlflow_errors
from aptrank.pipeline.provenance import canonical_hash, config_hash

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
TAG_KEY = "aptrank.input_key"
TAG_SPLIT = "aptrank.eval_split"
TAG_WINDOW = "aptrank.eval_window"
TAG_AUC = "aptrank.auc."  # + task name
TAG_MEAN_AUC = "aptrank.mean_auc"
TAG_EVAL_FEATURES = "aptrank.eval_features"
"""What the AUC tags were measured with (``served``: the scorer model with the snapshot serving had,
:mod:`pipeline.served_evaluation`; absent: the trainer's point-in-time features); the gate compares
only versions measured the same way."""
TAG_POPULARITY_AUC = "aptrank.popularity_auc."  # + task name: the floor's default reference
TAG_STEP = "aptrank.step."  # + step name (pipeline.promotion.STEPS) -> "done"
DONE = "done"
ONNX_PROVIDERS = ["CPUExecutionProvider"]  # serving scores on CPU onnxruntime (DESIGN.md, serving/)
EXAMPLE_BATCH = 2


class LoggableModel(Protocol):
    """A model that logs itself to a run and returns (registry source URI, logged-model id)."""

    def log(self, client: MlflowClient, run_id: str) -> tuple[str, str | None]: ...


class RegistryError(TrackingError):
    """Registering or gating a model version failed; the message says what was left behind."""


@dataclass(frozen=True)
class Registration:
    """The version for a run's inputs; ``created`` is False when it already existed."""

    version: ModelVersion
    created: bool


def registered_model_name(cfg: JobConfig) -> str:
    """``tracking.registered_model``, else the job name."""
    return cfg.tracking.registered_model or cfg.name


def version_key(cfg: JobConfig, input_fingerprint: str) -> str:
    """Idempotency key of a training: config hash (model-defining sections) + input fingerprint
    (e.g. :func:`aptrank.pipeline.provenance.fingerprint` of the ETL output, or the data window)."""
    return canonical_hash({"config": config_hash(cfg), "inputs": input_fingerprint})


def _quote(text: str) -> str:
    """A string literal for an MLflow search filter (its parser has no escapes: pick the quote)."""
    for quote in ("'", '"'):
        if quote not in text:
            return quote + text + quote
    raise RegistryError(f"registry name or key {text!r} holds both quote characters; MLflow cannot search it")


def _name_filter(name: str) -> str:
    return f"name = {_quote(name)}"


def find_version(client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    """The version of ``name`` registered with ``key`` (newest if several), or None; its step tags
    say how far its promotion got (:mod:`aptrank.pipeline.promotion`)."""
    with mlflow_errors(client.tracking_uri, f"search versions of '{name}'"):
        found = client.search_model_versions(f"{_name_filter(name)} and tags.`{TAG_KEY}` = {_quote(key)}")
    return max(found, key=lambda v: int(v.version)) if found else None


def eval_tags(evaluation: Mapping[str, Any], split: str, window: str) -> dict[str, str]:
    """Version tags the gate reads: per-task AUC on ``split`` (and the popularity baseline's, when
    evaluated), their mean, the split and window."""
    block = evaluation.get(split)
    if not isinstance(block, Mapping) or not isinstance(block.get("tasks"), Mapping) or not block["tasks"]:
        known = sorted(k for k, v in evaluation.items() if isinstance(v, Mapping) and "tasks" in v)
        raise RegistryError(f"evaluation has no per-task metrics for split '{split}' (gate.split); has: {known}")
    aucs = {task: float(m["auc"]) for task, m in block["tasks"].items()}
    tags = {TAG_SPLIT: split, TAG_WINDOW: window, TAG_MEAN_AUC: repr(float(np.mean(list(aucs.values()))))}
    tags.update({TAG_AUC + task: repr(v) for task, v in aucs.items()})
    popularity = block.get("popularity")
    if isinstance(popularity, Mapping):
        tags.update({TAG_POPULARITY_AUC + task: repr(float(m["auc"])) for task, m in popularity.items()})
    return tags


def read_aucs(version: ModelVersion, prefix: str = TAG_AUC) -> dict[str, float]:
    """task -> AUC from the version's tags (NaN stays NaN); ``prefix`` :data:`TAG_POPULARITY_AUC`
    reads the popularity baseline's."""
    return {k.removeprefix(prefix): float(v) for k, v in version.tags.items() if k.startswith(prefix)}


def _onnx_example(path: Path) -> tuple[Any, dict[str, np.ndarray], Any]:
    """(ModelProto, zero-filled input example with batch size 2, MLflow signature) of an ONNX file."""
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    model = onnx.load(str(path))
    example: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape = [
            d.dim_value if d.dim_value > 0 else (EXAMPLE_BATCH if i == 0 else 1) for i, d in enumerate(tensor.shape.dim)
        ]
        example[value.name] = np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    session = ort.InferenceSession(str(path), providers=ONNX_PROVIDERS)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, example), strict=True))
    return model, example, infer_signature(example, outputs)


def log_model_file(client: MlflowClient, run_id: str, model_path: str | Path) -> tuple[str, str | None]:
    """Log ``model_path`` to the run; return (registry source URI, logged-model id or None).

    An ONNX file becomes an MLflow logged model of the run's experiment (created here, so it does
    not land in the process's default experiment), deleted again if logging its files fails."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file to register does not exist")
    if path.suffix == ".onnx":
        from aptrank.serving.errors import ModelLoadError
        from aptrank.serving.model_integrity import check_finite

        try:
            check_finite(path)
        except ModelLoadError as e:
            raise RegistryError(f"registering run {run_id}: {e}") from e
    uri = client.tracking_uri
    check_reachable(uri)
    with mlflow_errors(uri, f"log model {path} to run {run_id}"):
        run = client.get_run(run_id)
        if path.suffix != ".onnx":
            client.log_artifact(run_id, str(path), MODEL_ARTIFACT)
            return f"{run.info.artifact_uri}/{MODEL_ARTIFACT}", None
        import onnx
        import onnxruntime

        model, example, signature = _onnx_example(path)
        reqs = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
    return log_logged_model(
        client,
        run_id,
        lambda model_id: mlflow.onnx.log_model(
            model,
            name=MODEL_ARTIFACT,
            run_id=run_id,
            model_id=model_id,
            signature=signature,
            input_example=example,
            pip_requirements=reqs,
            onnx_execution_providers=ONNX_PROVIDERS,
        ),
    )


def log_logged_model(client: MlflowClient, run_id: str, log: Callable[[str], Any]) -> tuple[str, str | None]:
    """Create a logged model of the run's experiment (so it does not land in the process's default
    experiment) and call ``log(model_id)`` (an ``mlflow.<flavor>.log_model`` call returning its
    ``ModelInfo``); delete the logged model again if that fails. Returns (model URI, model id)."""
    uri = client.tracking_uri
    with mlflow_errors(uri, f"log the model of run {run_id}"):
        run = client.get_run(run_id)
        logged = client.create_logged_model(
            run.info.experiment_id, name=MODEL_ARTIFACT, source_run_id=run_id, params=dict(run.data.params)
        )
        try:
            with fluent_uri(uri):
                info = log(logged.model_id)
        except Exception:
            with suppress(Exception):
                client.delete_logged_model(logged.model_id)
            raise
        return info.model_uri, info.model_id


def digest_tags(client: MlflowClient, source: str) -> dict[str, str]:
    """``{aptrank.model_sha256: digest}`` of the logged ONNX model at ``source`` as the registry
    stores it (read back, so the digest is of what scorers will download), or {} for other files."""
    import tempfile

    from aptrank.serving.model_integrity import TAG_SHA256, content_digest

    uri = client.tracking_uri
    with tempfile.TemporaryDirectory(prefix="aptrank-digest-") as tmp, mlflow_errors(uri, f"read back {source}"):
        with fluent_uri(uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        found = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
        if len(found) != 1 or found[0].suffix != ".onnx":
            return {}
        return {TAG_SHA256: content_digest(found[0])}


def download_model(client: MlflowClient, name: str, ref: str, dst: str | Path) -> Path:
    """Download the files of version ``ref`` (an alias such as ``champion``, or a version number)
    of ``name`` into ``dst``; return the local folder (an MLflow model folder for ONNX versions:
    ``MLmodel`` + ``model.onnx``)."""
    uri = client.tracking_uri
    check_reachable(uri)
    with mlflow_errors(uri, f"download '{name}' {ref}"):
        version = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
        with fluent_uri(uri):  # ``models:/<id>`` sources resolve through the process-wide URI
            local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dst))
    return Path(local)


def _undo(client: MlflowClient, name: str, version: ModelVersion | None, created_model: bool) -> str:
    """Delete what a failed registration created; describe the outcome."""
    try:
        if version is not None:
            client.delete_model_version(name, version.version)
        if created_model and not client.search_model_versions(_name_filter(name)):
            client.delete_registered_model(name)
    except Exception as e:
        left = f"version {version.version}" if version is not None else f"registered model '{name}'"
        return (
            f"{left} could not be removed ({e}); a rerun of the job finishes its promotion steps "
            "(aptrank.pipeline.promotion), or delete it when the server is back"
        )
    return "nothing was left registered"


def create_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    source: str,
    *,
    key: str,
    tags: Mapping[str, str],
    model_id: str | None = None,
    alias: str | None = CHALLENGER,
) -> ModelVersion:
    """Steps 2-3 of the module docstring; on failure undo them and raise :class:`RegistryError`."""
    uri = client.tracking_uri
    check_reachable(uri)
    created_model = False
    with mlflow_errors(uri, f"create registered model '{name}'"):
        try:
            client.create_registered_model(name)
            created_model = True
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
    version: ModelVersion | None = None
    steps = {TAG_STEP + "logged": DONE, TAG_STEP + "created": DONE}
    try:
        with fluent_uri(uri):  # a SQL registry store resolves ``models:/<id>`` through the process-wide URI
            version = client.create_model_version(
                name, source, run_id=run_id, tags={**tags, TAG_KEY: key, **steps}, model_id=model_id
            )
        if alias is not None:
            client.set_registered_model_alias(name, alias, version.version)
            client.set_model_version_tag(name, version.version, TAG_STEP + alias, DONE)
    except (MlflowException, OSError) as e:
        outcome = _undo(client, name, version, created_model)
        raise RegistryError(f"MLflow {uri}: registering run {run_id} as '{name}' failed: {e}; {outcome}") from e
    return client.get_model_version(name, version.version)


def log_model(client: MlflowClient, run_id: str, model: str | Path | LoggableModel) -> tuple[str, str | None]:
    """Step 1: log ``model`` to the run, a file (:func:`log_model_file`) or an object that logs
    itself (the job's scorer model); returns (the version's source URI, the logged model id)."""
    if isinstance(model, str | Path):
        return log_model_file(client, run_id, model)
    check_reachable(client.tracking_uri)
    return model.log(client, run_id)


def register_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    model_path: str | Path | LoggableModel,
    *,
    key: str,
    evaluation: Mapping[str, Any],
    window: str,
    split: str = "test",
    tags: Mapping[str, str] | None = None,
    alias: str = CHALLENGER,
) -> Registration:
    """Register the run's model as a new version of ``name`` with alias ``challenger``; when a
    complete version with ``key`` exists already, return it and register nothing (idempotent)."""
    check_reachable(client.tracking_uri)
    existing = find_version(client, name, key)
    if existing is not None:
        return Registration(existing, created=False)
    version_tags = {**eval_tags(evaluation, split, window), **(tags or {})}
    source, model_id = log_model(client, run_id, model_path)
    version_tags.update(digest_tags(client, source))
    version = create_version(client, name, run_id, source, key=key, tags=version_tags, model_id=model_id, alias=alias)
    return Registration(version, created=True)
