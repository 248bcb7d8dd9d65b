"""The research grid file (``configs/grids/*.yaml``): datasets x arch x method x optimizer x APT x seed.

A grid file is read into a :class:`GridSpec` and checked completely before any work starts: unknown
or missing keys, wrong types, unknown architectures / methods / optimizers, a dataset that names
neither an input nor generator parameters, a missing input or ETL config, bad generator parameters
(:class:`aptrank.data.synthetic.GeneratorConfig` rules) and a ``job`` section that
:func:`aptrank.pipeline.config.build_config` refuses for any cell. Every error is a :class:`GridError`
naming the file and the dotted key.

Paths in the file are relative to the current directory (as in ``configs/demo.yaml``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aptrank.data.etl.typed import TypedDataError, build_dataclass
from aptrank.data.synthetic import ConfigError as SynthConfigError
from aptrank.data.synthetic import GeneratorConfig
from aptrank.pipeline.experiment.cells import BASELINE_ARCH, check_job

#: Names become folder and lock-file names.
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REQUIRED = ("name", "datasets", "archs", "methods", "optimizers", "seeds")
DELTA_M_METRICS = ("auc", "gauc", "logloss")


class GridError(ValueError):
    """A grid file breaks a rule; the message names the file and the key (also in ``key``)."""

    def __init__(self, source: str, key: str, rule: str) -> None:
        super().__init__(f"{source}: '{key}': {rule}")
        self.key = key


@dataclass(frozen=True)
class DatasetDecl:
    """One dataset: an existing log (``source`` + ``input``) or a generated one (``generator``:
    :class:`GeneratorConfig` parameters, read as source ``canonical``), then the ETL with ``etl_config``."""

    etl_config: str
    source: str | None = None
    input: str | None = None
    generator: GeneratorConfig | None = None


@dataclass(frozen=True)
class GridSpec:
    """A parsed, checked grid file. ``job`` is the base job config (``pipeline.config`` sections)
    that every cell starts from; ``apt`` lists the APT settings to cross (false = off, true = on);
    ``method_kwargs`` maps a method to its ``mtl.method_kwargs`` (e.g. ``imgrad: {alpha: 0.8}``)."""

    name: str
    datasets: dict[str, DatasetDecl]
    archs: tuple[str, ...]
    methods: tuple[str, ...]
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...]
    apt: tuple[bool, ...] = (False, True)
    baselines: bool = True
    delta_m_metrics: tuple[str, ...] = ("auc",)
    workers: int = 1
    job: dict[str, Any] = field(default_factory=dict)
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "<grid>"

    def to_dict(self) -> dict[str, Any]:
        """Everything that defines the grid (for its hash and results.json)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid YAML file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise GridError(str(p), "<file>", "grid file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise GridError(str(p), "<file>", f"not valid YAML ({e})") from e
    return grid_from_dict(raw, str(p))


def grid_from_dict(raw: Any, source: str = "<grid>") -> GridSpec:
    """A checked :class:`GridSpec` from plain data (parsed YAML)."""
    if not isinstance(raw, dict):
        raise GridError(source, "<top level>", "must be a mapping")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise GridError(source, missing[0], f"required key missing (required: {', '.join(REQUIRED)})")
    body = copy.deepcopy(raw)
    free = {}  # free-form sections: checked by pipeline.config / apt when the cell configs are built
    for key, what in (
        ("job", "job config sections (model, train, mtl, ...)"),
        ("method_kwargs", "method name -> its arguments"),
    ):
        free[key] = body.pop(key, None) or {}
        if not isinstance(free[key], dict):
            raise GridError(source, key, f"must be a mapping of {what}")
    known = {f.name for f in dataclasses.fields(GridSpec)} - {"source"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise GridError(source, unknown[0], f"unknown key; known: {', '.join(sorted(known))}")
    try:
        spec = build_dataclass(GridSpec, body, source)
    except TypedDataError as e:
        raise _typed_error(e, source) from e
    spec = dataclasses.replace(spec, **free, source=source)
    _check(spec)
    return spec


def _typed_error(e: TypedDataError, source: str) -> GridError:
    """A :class:`TypedDataError` (``"<source>: <dotted key>: <rule>"``) as a :class:`GridError`; a
    generator parameter's own error adds the parameter to the key."""
    text = str(e).removeprefix(f"{source}: ")
    key, _, rule = text.partition(": ")
    quoted = re.match(r"unknown key '([^']+)'", text)
    if quoted:
        return GridError(source, quoted.group(1), "unknown key" + text[quoted.end() :])
    if isinstance(e.__cause__, SynthConfigError):
        return GridError(source, f"{key}.{e.__cause__.param}", e.__cause__.args[0].split(": ", 1)[-1])
    return GridError(source, key, rule)


def _check(spec: GridSpec) -> None:
    from aptrank.apt.methods import METHODS
    from aptrank.apt.optim import OPTIMIZERS
    from aptrank.models.registry import ARCHITECTURES

    src = spec.source
    if not NAME_RULE.match(spec.name):
        raise GridError(src, "name", f"{spec.name!r} must match {NAME_RULE.pattern}")
    archs = sorted(a for a in ARCHITECTURES if a != BASELINE_ARCH)
    _members(src, "archs", spec.archs, archs)
    _members(src, "methods", spec.methods, sorted(METHODS))
    _members(src, "optimizers", spec.optimizers, sorted(OPTIMIZERS))
    _members(src, "delta_m_metrics", spec.delta_m_metrics, list(DELTA_M_METRICS))
    _distinct(src, "seeds", spec.seeds)
    _distinct(src, "apt", spec.apt)
    if any(s < 0 for s in spec.seeds):
        raise GridError(src, "seeds", "seeds must be >= 0")
    if spec.workers < 1:
        raise GridError(src, "workers", f"must be >= 1, got {spec.workers}")
    if not spec.datasets:
        raise GridError(src, "datasets", "needs at least one dataset")
    for name, decl in spec.datasets.items():
        _check_dataset(src, name, decl)
    check_job(spec)


def _members(src: str, key: str, values: tuple[str, ...], known: list[str]) -> None:
    _distinct(src, key, values)
    for i, v in enumerate(values):
        if v not in known:
            raise GridError(src, f"{key}[{i}]", f"unknown value {v!r}; known: {known}")


def _distinct(src: str, key: str, values: tuple[Any, ...]) -> None:
    if not values:
        raise GridError(src, key, "needs at least one value")
    if len(set(values)) != len(values):
        raise GridError(src, key, f"values must be distinct, got {list(values)}")


def _check_dataset(src: str, name: str, d: DatasetDecl) -> None:
    from aptrank.data.adapters import SOURCES
    from aptrank.data.etl.config import EtlConfigError
    from aptrank.data.etl.config import load_config as load_etl_config

    key = f"datasets.{name}"
    if not NAME_RULE.match(name):
        raise GridError(src, key, f"dataset name must match {NAME_RULE.pattern}")
    if (d.input is None) == (d.generator is None):
        raise GridError(src, key, "give exactly one of 'input' (with 'source') or 'generator'")
    if d.input is not None:
        if d.source not in SOURCES:
            raise GridError(src, f"{key}.source", f"{d.source!r} is not a source; known: {sorted(SOURCES)}")
        if not Path(d.input).exists():
            raise GridError(src, f"{key}.input", f"{d.input}: path does not exist")
    elif d.source is not None:
        raise GridError(src, f"{key}.source", "a generated dataset is read as 'canonical'; leave 'source' out")
    try:
        load_etl_config(d.etl_config)
    except EtlConfigError as e:
        raise GridError(src, f"{key}.etl_config", str(e)) from e
