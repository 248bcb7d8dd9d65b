"""The research grid file (``configs/grids/*.yaml``): datasets x variants x arch x (method, optimizer,
APT) x seed, plus the single-task and LightGBM baselines.

(method, optimizer, APT) is the product ``methods`` x ``optimizers`` x ``apt``, or an explicit list
``configurations`` (e.g. the best three of an earlier table) when the grid gives one instead.
``variants`` (:mod:`aptrank.pipeline.experiment.variants`) are named job and ETL overrides.

A grid file is read into a :class:`GridSpec` and checked completely before any work starts: unknown
or missing keys, wrong types, unknown architectures / methods / optimizers, a dataset that names
neither an input nor generator parameters, a missing input or ETL config, bad generator parameters
(:class:`aptrank.data.synthetic.GeneratorConfig` rules) and a ``job`` section that
:func:`aptrank.pipeline.config.build_config` refuses for any cell. Every error is a :class:`GridError`
naming the file and the dotted key.

Paths in the file are relative to the current directory (as in ``configs/demo.yaml``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr

from aptrank.config_model import AsTuple, ConfigModel, read_yaml_mapping
from aptrank.data.synthetic import GeneratorConfig
from aptrank.errors import ConfigError
from aptrank.pipeline.baselines.lightgbm_baseline import LightGBMConfig
from aptrank.pipeline.experiment.cells import BASELINE_ARCH, LIGHTGBM_ARCH, check_job
from aptrank.pipeline.experiment.comparison import RowRef
from aptrank.pipeline.experiment.variants import VariantDecl, variant_etl_raw

#: Names become folder and lock-file names.
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REQUIRED = ("name", "datasets", "archs", "seeds")
PRODUCT_KEYS = ("methods", "optimizers")
"""Required unless ``configurations`` lists the (method, optimizer, APT) triples explicitly."""
DELTA_M_METRICS = ("auc", "gauc", "logloss")


class GridError(ConfigError):
    """A grid file breaks a rule; the message names the file and the key (also in ``key``)."""

    def __init__(self, source: str, key: str, rule: str) -> None:
        super().__init__(key, rule, source)
        self.args = (f"{source}: '{key}': {rule}",)


class DatasetDecl(ConfigModel):
    """One dataset: an existing log (``source`` + ``input``) or a generated one (``generator``:
    :class:`GeneratorConfig` parameters, read as source ``canonical``), then the ETL with ``etl_config``."""

    etl_config: str
    source: str | None = None
    input: str | None = None
    generator: GeneratorConfig | None = None


class Configuration(ConfigModel):
    """One explicit (method, optimizer, APT) of ``configurations``."""

    method: str
    optimizer: str
    apt: bool = False


class GridSpec(ConfigModel):
    """A parsed, checked grid file. ``job`` is the base job config (``pipeline.config`` sections)
    that every cell starts from; ``apt`` lists the APT settings to cross (false = off, true = on);
    ``method_kwargs`` maps a method to its ``mtl.method_kwargs`` (e.g. ``imgrad: {alpha: 0.8}``)."""

    name: str
    datasets: dict[str, DatasetDecl]
    archs: Annotated[tuple[str, ...], AsTuple]
    seeds: Annotated[tuple[int, ...], AsTuple]
    methods: Annotated[tuple[str, ...], AsTuple] = ()
    optimizers: Annotated[tuple[str, ...], AsTuple] = ()
    apt: Annotated[tuple[bool, ...], AsTuple] = (False, True)
    configurations: Annotated[tuple[Configuration, ...], AsTuple] = Field(
        (), description="explicit (method, optimizer, apt) list instead of methods x optimizers x apt"
    )
    variants: dict[str, VariantDecl] = Field(default_factory=dict, description="name -> job and ETL overrides")
    baselines: bool = True
    lightgbm: bool = Field(False, description="LightGBM rows (one model per task) per dataset, variant and seed")
    lightgbm_params: LightGBMConfig = Field(default_factory=LightGBMConfig)
    references: Annotated[tuple[RowRef, ...], AsTuple] = Field(
        (RowRef(),), description="rows the served-AUC comparison sections are against (default: LightGBM)"
    )
    delta_m_metrics: Annotated[tuple[str, ...], AsTuple] = ("auc",)
    workers: int = 1
    job: dict[str, Any] = Field(
        default_factory=dict, description="job config sections (model, train, mtl, ...), checked per cell"
    )
    method_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="method -> its arguments")
    _source: str = PrivateAttr("<grid>")

    @property
    def source(self) -> str:
        """The grid file (how errors name it)."""
        return self._source

    @property
    def combos(self) -> list[tuple[str, str, bool]]:
        """Every (method, optimizer, APT) the grid trains, in order."""
        if self.configurations:
            return [(c.method, c.optimizer, c.apt) for c in self.configurations]
        return [(m, o, a) for m in self.methods for o in self.optimizers for a in self.apt]

    @property
    def variant_names(self) -> list[str | None]:
        """The variants in order; ``[None]`` (no overrides, pre-axis names) when the grid has none."""
        return list(self.variants) or [None]


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid YAML file (see the module docstring)."""
    try:
        raw = read_yaml_mapping(path, "grid")
    except ConfigError as e:
        raise GridError(str(Path(path)), "<file>", e.reason) from e
    return grid_from_dict(raw, str(Path(path)))


def grid_from_dict(raw: Any, source: str = "<grid>") -> GridSpec:
    """A checked :class:`GridSpec` from plain data (parsed YAML)."""
    if not isinstance(raw, dict):
        raise GridError(source, "<top level>", "must be a mapping")
    required = REQUIRED if raw.get("configurations") else (*REQUIRED, *PRODUCT_KEYS)
    missing = [k for k in required if k not in raw]
    if missing:
        raise GridError(source, missing[0], f"required key missing (required: {', '.join(required)})")
    body = {k: v for k, v in raw.items() if not (k in ("job", "method_kwargs") and v is None)}
    try:
        spec = GridSpec.parse(body, source)
    except ConfigError as e:  # job and method_kwargs are checked when the cell configs are built
        raise GridError(source, e.key, e.reason) from e
    spec._source = source
    _check(spec)
    return spec


def _check(spec: GridSpec) -> None:
    from aptrank.apt.methods import METHODS
    from aptrank.apt.optim import OPTIMIZERS
    from aptrank.models.registry import ARCHITECTURES

    src = spec.source
    if not NAME_RULE.match(spec.name):
        raise GridError(src, "name", f"{spec.name!r} must match {NAME_RULE.pattern}")
    archs = sorted(a for a in ARCHITECTURES if a not in (BASELINE_ARCH, LIGHTGBM_ARCH))
    _members(src, "archs", spec.archs, archs)
    if spec.configurations:
        if spec.methods or spec.optimizers:
            raise GridError(src, "configurations", "give either 'configurations' or 'methods' x 'optimizers', not both")
        for i, c in enumerate(spec.configurations):
            for key, value, known in (("method", c.method, METHODS), ("optimizer", c.optimizer, OPTIMIZERS)):
                if value not in known:
                    raise GridError(
                        src, f"configurations[{i}].{key}", f"unknown value {value!r}; known: {sorted(known)}"
                    )
        _distinct(src, "configurations", tuple(spec.combos))
    else:
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
    if spec.lightgbm and importlib.util.find_spec("lightgbm") is None:
        raise GridError(src, "lightgbm", "LightGBM rows need the lightgbm package: pip install 'aptrank[baselines]'")
    for name in spec.variants:
        if not NAME_RULE.match(name):
            raise GridError(src, f"variants.{name}", f"variant name must match {NAME_RULE.pattern}")
    for name, decl in spec.datasets.items():
        _check_dataset(src, name, decl, spec.variants)
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


def _check_dataset(src: str, name: str, d: DatasetDecl, variants: dict[str, VariantDecl]) -> None:
    from aptrank.data.adapters import SOURCES
    from aptrank.data.etl.config import EtlConfigError, config_from_dict
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
    for variant, decl in variants.items():
        if decl.etl:
            try:
                config_from_dict(variant_etl_raw(d.etl_config, decl), f"{d.etl_config} + variants.{variant}.etl")
            except EtlConfigError as e:
                raise GridError(src, f"variants.{variant}.etl", str(e)) from e
