"""Job config: one YAML file per job, ``--set key=value`` overrides, validated when it loads.

Sections owned here are typed dataclasses (``data``, ``train``, ``tracking``, ``gate``, ``scoring``);
``model`` and ``mtl`` are validated by their own libraries (``models.ModelConfig``,
``apt.MTLConfig``) at load time, so an invalid combination is refused before any work starts.
Unknown keys anywhere are an error naming the key.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The job config breaks a rule; the message names the file, the key and the rule."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "kuairand"
    input: str = "data/samples/kuairand-pure"
    etl_config: str | None = None
    features: str | None = None  # an existing ETL output dir (skips the ETL step of `aptrank run`)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 2048
    eval_batch_size: int = 16384
    epochs: int = 5
    patience: int = 2
    shuffle_buffer: int = 1_048_576  # rows; a split that fits is converted once and kept in memory
    device: str = "auto"
    threads: int | None = None
    max_steps_per_epoch: int | None = None


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = None  # default: sqlite in the work dir; MLFLOW_TRACKING_URI wins when set
    experiment: str = "aptrank"
    registered_model: str | None = None  # default: the job name
    timeout_s: float = 30.0  # a remote MLflow call gives up within this (pipeline.mlflow_store.bound_requests)


@dataclass(frozen=True)
class GateConfig:
    auc_tolerance: float = 0.002
    split: str = "test"
    # floors (issue #20): no version below them is promoted; default floor of a task = the popularity
    # baseline's AUC on the same split + floor_margin; floors: {task: min AUC} overrides per task
    floor_margin: float = 0.01
    floors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoringConfig:
    weights: dict[str, float] = field(default_factory=dict)  # task -> weight of p_task in `score`
    # the exported graph: rows per folded embedding table (models.export_fold, `aptrank export
    # --fold-rows`); None = the exporter's default, 0 = no folding
    fold_rows: int | None = None


@dataclass(frozen=True)
class JobConfig:
    name: str = "aptrank"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "mmoe"})
    train: TrainConfig = field(default_factory=TrainConfig)
    mtl: dict[str, Any] = field(default_factory=dict)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    source_file: str = "<defaults>"

    @property
    def arch(self) -> str:
        return str(self.model.get("arch", "mmoe"))

    @property
    def model_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "arch"}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source_file")
        return d

    def flat(self) -> dict[str, str]:
        """Dotted-key view (``train.batch_size`` -> "2048"), e.g. for MLflow params."""
        out: dict[str, str] = {}
        _flatten(self.to_dict(), "", out)
        return out


SECTIONS = {
    "data": DataConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
    "gate": GateConfig,
    "scoring": ScoringConfig,
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Read ``path`` (YAML; None = defaults), apply ``key=value`` overrides, validate everything."""
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        _apply_override(raw, item, source)
    return build_config(raw, source)


def build_config(raw: dict[str, Any], source: str = "<dict>") -> JobConfig:
    top = {f.name for f in fields(JobConfig)} - {"source_file"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(top)}")
    kwargs: dict[str, Any] = {"source_file": source}
    for key, value in raw.items():
        if key in SECTIONS:
            kwargs[key] = _section(SECTIONS[key], key, value, source)
        elif key in ("model", "mtl"):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping")
            kwargs[key] = dict(value)
        else:
            kwargs[key] = value
    cfg = JobConfig(**kwargs)
    _validate_libraries(cfg)
    return cfg


def _section(cls: type, name: str, value: Any, source: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[f'{name}.{k}' for k in unknown]}; known: {sorted(known)}")
    return cls(**value)


def _validate_libraries(cfg: JobConfig) -> None:
    """Let the model and optimizer libraries refuse bad values now, with their reasons."""
    from aptrank.apt import MTLConfig
    from aptrank.models.config import ModelConfig
    from aptrank.models.registry import ARCHITECTURES

    if cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"{cfg.source_file}: model.arch '{cfg.arch}' unknown; known: {sorted(ARCHITECTURES)}")
    try:
        ModelConfig.from_dict(cfg.model_options)
        MTLConfig.from_dict(cfg.mtl)
    except ValueError as e:
        raise ConfigError(f"{cfg.source_file}: {e}") from e
    if cfg.train.batch_size < 1 or cfg.train.epochs < 1:
        raise ConfigError(f"{cfg.source_file}: train.batch_size and train.epochs must be >= 1")
    if cfg.train.device not in ("auto", "cpu", "cuda") and not cfg.train.device.startswith("cuda:"):
        raise ConfigError(f"{cfg.source_file}: train.device must be auto, cpu, cuda or cuda:N")
    fold = cfg.scoring.fold_rows
    if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 0):
        raise ConfigError(f"{cfg.source_file}: scoring.fold_rows must be an integer >= 0 (0: no folding), got {fold!r}")


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value (e.g. train.epochs=3)")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text else None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set '{item}': '{part}' is not a section in {source}")
    node[parts[-1]] = value


def _flatten(d: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            _flatten(v, key + ".", out)
        else:
            out[key] = str(v)
