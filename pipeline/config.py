"""Job config: one YAML file per job, ``--set key=value`` overrides, parsed once when it loads.

:class:`JobConfig` is a typed model (:mod:`aptrank.config_model`): the sections owned here
(``data``, ``train``, ``tracking``, ``gate``, ``scoring``) are declared below; ``model`` is the
section of the architecture named by ``model.arch`` (:data:`aptrank.models.registry.ModelSection`,
each architecture owns its section) and ``mtl`` is :class:`aptrank.apt.MTLConfig`. Everything is
checked at load (unknown keys, wrong types, invalid combinations) and refused with one
:class:`ConfigError` naming the file and the dotted key, before any work starts. The JSON Schema of
this model is published as ``docs/job-config.schema.json`` (:mod:`aptrank.pipeline.config_schema`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from aptrank.apt.config import MTLConfig
from aptrank.config_model import ConfigModel, parse_yaml, read_yaml_mapping
from aptrank.errors import ConfigError
from aptrank.models.config import ModelConfig, PositiveInt
from aptrank.models.mmoe import MMoEConfig
from aptrank.models.registry import DEFAULT_ARCH, ModelSection, model_config, own_sizes
from aptrank.models.task_dag import TaskDependency, check_acyclic
from aptrank.pipeline.distill import DistillConfig

__all__ = ["ConfigError", "JobConfig", "build_config", "load_config"]

DEFAULTS_SOURCE = "<defaults>"


class DataConfig(ConfigModel):
    """Where the job's events come from and how the ETL reads them."""

    source: str = "kuairand"
    input: str = "data/samples/kuairand-pure"
    etl_config: str | None = None
    features: str | None = Field(None, description="an existing ETL output dir (skips the ETL step of `aptrank run`)")


class TrainConfig(ConfigModel):
    """The training loop: batches, epochs, early stopping, device and threads."""

    batch_size: PositiveInt = 2048
    eval_batch_size: PositiveInt = 16384
    epochs: PositiveInt = 5
    patience: Annotated[int, Field(ge=0)] = 2
    shuffle_buffer: PositiveInt = Field(
        1_048_576, description="rows; a split that fits is converted once and kept in memory"
    )
    device: str = "auto"
    threads: Annotated[int, Field(ge=0)] | None = Field(None, description="torch threads; null or 0 = torch's default")
    max_steps_per_epoch: Annotated[int, Field(ge=0)] | None = Field(None, description="null or 0 = the whole split")
    meda: bool = Field(
        False,
        description="re-initialise the embedding tables at the start of every epoch after the first, the dense "
        "part keeps training (Liu et al. 2023, MEDA; pipeline/meda.py); single-process runs only",
    )
    distill: DistillConfig = Field(
        default_factory=DistillConfig,
        description="soft labels from a LightGBM teacher, cross-fitted on the training split (pipeline/distill.py)",
    )

    @model_validator(mode="after")
    def _device_rule(self) -> TrainConfig:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self


class TrackingConfig(ConfigModel):
    """MLflow: where runs are tracked and under which names."""

    uri: str | None = Field(None, description="default: sqlite in the work dir; MLFLOW_TRACKING_URI wins when set")
    experiment: str = "aptrank"
    registered_model: str | None = Field(None, description="default: the job name")
    timeout_s: float = Field(30.0, description="a remote MLflow call gives up within this many seconds")


class GateConfig(ConfigModel):
    """The promotion gate: the candidate's AUC may trail the champion's by at most ``auc_tolerance``."""

    auc_tolerance: float = 0.002
    split: str = "test"
    # floors (issue #20): no version below them is promoted; default floor of a task = the popularity
    # baseline's AUC on the same split + floor_margin; floors: {task: min AUC} overrides per task
    floor_margin: float = 0.01
    floors: dict[str, float] = Field(default_factory=dict)


class ScoringConfig(ConfigModel):
    """How scores are made from the task probabilities, and the exported graph."""

    weights: dict[str, float] = Field(default_factory=dict, description="task -> weight of p_task in `score`")
    engine: Literal["local", "spark"] = Field(
        "local",
        description="where `aptrank score --config` scores: local (threads in one process) or spark "
        "(mlflow.pyfunc.spark_udf over the registered model, pyspark extra; docs/scaling.md); --engine wins",
    )
    fold_rows: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="the exported graph: rows per folded embedding table (models.export.fold, `aptrank export "
        "--fold-rows`); null = the exporter's default, 0 = no folding",
    )


class JobConfig(ConfigModel):
    """A whole job: what to read, which model, how to train and track it, how to gate and score."""

    name: str = "aptrank"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    tasks: dict[str, TaskDependency] = Field(
        default_factory=dict,
        description="task dependencies (ESMM): task -> {given: parent task}; the model outputs "
        "p(task) = p(parent) * p(task | parent); tasks not listed are independent heads",
    )
    model: ModelSection = Field(
        default_factory=lambda: MMoEConfig(arch="mmoe"),
        description="the section of the architecture named by `arch` (default mmoe)",
        json_schema_extra=lambda schema: schema.update(anyOf=schema.pop("oneOf")),  # `arch` may be left out
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    mtl: MTLConfig = Field(default_factory=MTLConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    _source: str = PrivateAttr(DEFAULTS_SOURCE)
    _written: dict[str, Any] = PrivateAttr(default_factory=dict)
    """The ``model`` and ``mtl`` sections as the file wrote them (what :meth:`to_dict` reports)."""

    @model_validator(mode="after")
    def _acyclic_tasks(self) -> JobConfig:
        check_acyclic(self.tasks)
        return self

    @model_validator(mode="after")
    def _conditional_loss_needs_hard_labels(self) -> JobConfig:
        """ESMM's conditional loss selects the rows whose parent label is 1; soft labels
        (``train.distill``) have no such rows, so the two are refused together."""
        if self.train.distill.weight > 0:
            for task, dependency in self.tasks.items():
                if dependency.conditional_loss:
                    raise ConfigError(
                        f"tasks.{task}.conditional_loss",
                        "the conditional loss needs the parent's hard label, and train.distill.weight > 0 "
                        "trains on soft labels: set conditional_loss: false (ESMM's entire-space loss "
                        "takes soft labels) or train.distill.weight: 0",
                    )
        return self

    @property
    def source_file(self) -> str:
        """Where this config was read from (a file, ``<defaults>`` or a description)."""
        return self._source

    @property
    def arch(self) -> str:
        return self.model.arch  # type: ignore[no-any-return]

    @property
    def model_options(self) -> dict[str, Any]:
        """The ``model`` values the config set, without ``arch``."""
        return {k: v for k, v in self.model.given().items() if k != "arch"}

    @property
    def model_seeded(self) -> ModelConfig:
        """The model section with its seed defaulting to the job's seed."""
        return _seeded(self.model, self.seed)

    @property
    def mtl_seeded(self) -> MTLConfig:
        """The ``mtl`` section with its seed defaulting to the job's seed."""
        return _seeded(self.mtl, self.seed)

    def with_model(self, arch: str, **values: Any) -> JobConfig:
        """The same job with architecture ``arch`` (e.g. the single-task baselines): its section
        keeps the sizes of this one that ``arch`` declares, then ``values`` are set."""
        written = {**self.to_dict()["model"], "arch": arch, **values}
        single = self.model_copy(update={"model": model_config(arch, written)})
        single._written = {**self._written, "model": written}
        return single

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data: every value of the sections owned here, and the ``model`` and
        ``mtl`` sections as written (what :func:`pipeline.provenance.config_hash` hashes; a grid's
        shared model sizes included). ``tasks`` only when it has dependencies, so a job without them
        keeps its hash and logged params."""
        d = self.model_dump(mode="json", exclude={"model", "mtl"})
        d["model"] = copy.deepcopy(self._written.get("model", self.model.given()))
        d["mtl"] = copy.deepcopy(self._written.get("mtl", self.mtl.given()))
        return {k: d[k] for k in type(self).model_fields if k != "tasks" or self.tasks}

    def flat(self) -> dict[str, str]:
        """Dotted-key view (``train.batch_size`` -> "2048"), e.g. for MLflow params."""
        out: dict[str, str] = {}
        _flatten(self.to_dict(), "", out)
        return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Read ``path`` (YAML; None = defaults), apply ``key=value`` overrides, validate everything."""
    source = str(path) if path else DEFAULTS_SOURCE
    raw = read_yaml_mapping(path, "config") if path is not None else {}
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        _apply_override(raw, item, source)
    return build_config(raw, source)


def build_config(raw: dict[str, Any], source: str = "<dict>", *, shared_model_sizes: bool = False) -> JobConfig:
    """A checked :class:`JobConfig` from plain data (parsed YAML, a run's logged config).

    ``shared_model_sizes``: the ``model`` section may hold keys of other architectures (a grid's
    sizes shared by its architectures, a run logged with them): they are left out of the model.
    :meth:`JobConfig.to_dict` reports ``model`` and ``mtl`` as written, keys left out included."""
    written = {k: copy.deepcopy(raw[k]) for k in ("model", "mtl") if isinstance(raw.get(k), dict)}
    model = raw.get("model")
    if shared_model_sizes and isinstance(model, dict):
        raw = {**raw, "model": own_sizes(str(model.get("arch", DEFAULT_ARCH)), model)}
    cfg = JobConfig.parse(raw, source)
    cfg._source = source
    cfg._written = written
    return cfg


def _seeded(section: Any, seed: int) -> Any:
    return section if "seed" in section.model_fields_set else section.model_copy(update={"seed": seed})


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    if "=" not in item:
        raise ConfigError("", f"--set '{item}': expected key=value (e.g. train.epochs=3)")
    key, text = item.split("=", 1)
    value = parse_yaml(text) if text else None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(key.strip(), f"--set '{item}': '{part}' is not a section", source)
    node[parts[-1]] = value


def _flatten(d: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            _flatten(v, key + ".", out)
        else:
            out[key] = str(v)
