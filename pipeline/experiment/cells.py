"""Cells of a grid: one training run each, and the job config it trains with.

A cell is (dataset, arch, method, optimizer, APT, seed); a single-task baseline cell is (dataset,
``single_task``, task, seed), trained with EW/AdamW (one task: the method does not matter) and no
diagnostics. "APT on" is ``mtl.apt.momentum: true``, plus ``direction_preservation: true`` when
the optimizer uses Muon (issue #8); every other ``mtl.apt`` key comes from the grid's ``job``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aptrank.apt import MTLConfig
from aptrank.pipeline.config import ConfigError, JobConfig, build_config

if TYPE_CHECKING:
    from aptrank.pipeline.experiment.grid import GridSpec

BASELINE_ARCH = "single_task"
BASELINE_METHOD = "ew"
BASELINE_OPTIMIZER = "adamw"
#: Job sections the grid sets itself (a ``job`` that names them is refused).
GRID_OWNED = ("name", "seed", "data")


@dataclass(frozen=True)
class Cell:
    """One run of the grid; ``task`` is set for a single-task baseline."""

    dataset: str
    arch: str
    method: str
    optimizer: str
    apt: bool
    seed: int
    task: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.task is not None

    @property
    def row(self) -> tuple[str, str, str, str, bool]:
        """The table row this cell belongs to (its seeds are aggregated): (dataset, arch or
        ``single_task``, method or the baseline's task, optimizer, APT)."""
        return (self.dataset, self.arch, self.task or self.method, self.optimizer, self.apt)

    @property
    def id(self) -> str:
        """``kuairand/mmoe/pcgrad/adamw/apt-on/seed1`` or ``kuairand/single_task/click/seed1``: the
        MLflow run name and the cell's folder under ``<workdir>/cells``."""
        if self.task is not None:
            return f"{self.dataset}/{BASELINE_ARCH}/{self.task}/seed{self.seed}"
        apt = "apt-on" if self.apt else "apt-off"
        return f"{self.dataset}/{self.arch}/{self.method}/{self.optimizer}/{apt}/seed{self.seed}"


def baseline_cell(dataset: str, task: str, seed: int) -> Cell:
    return Cell(dataset, BASELINE_ARCH, BASELINE_METHOD, BASELINE_OPTIMIZER, False, seed, task)


def grid_cells(spec: GridSpec, tasks: dict[str, tuple[str, ...]]) -> list[Cell]:
    """Every cell in run order: per dataset the baselines (when on), then arch x method x optimizer x
    APT x seed. ``tasks`` maps each dataset to its task names (from its FeatureSpec)."""
    cells: list[Cell] = []
    for dataset in spec.datasets:
        if spec.baselines:
            cells += [baseline_cell(dataset, t, s) for t in tasks[dataset] for s in spec.seeds]
        cells += [
            Cell(dataset, a, m, o, apt, s)
            for a in spec.archs
            for m in spec.methods
            for o in spec.optimizers
            for apt in spec.apt
            for s in spec.seeds
        ]
    return cells


def cell_config(spec: GridSpec, cell: Cell) -> JobConfig:
    """The checked job config of ``cell``: the grid's ``job`` with the cell's choices set."""
    raw: dict[str, Any] = copy.deepcopy(spec.job)
    decl = spec.datasets[cell.dataset]
    raw["name"], raw["seed"] = spec.name, cell.seed
    raw["data"] = {
        "source": decl.source or "canonical",
        "etl_config": decl.etl_config,
        "input": decl.input or f"datasets/{cell.dataset}/raw",
    }
    model = dict(raw.get("model") or {})  # shared by the grid's archs: each cell's model keeps its arch's keys
    model["arch"] = cell.arch
    if cell.task is not None:
        model["task"] = cell.task
    mtl = dict(raw.get("mtl") or {})
    mtl["method"], mtl["optimizer"] = cell.method, cell.optimizer
    mtl["method_kwargs"] = dict(spec.method_kwargs.get(cell.method, {}))
    apt = dict(mtl.get("apt") or {})
    apt["momentum"] = cell.apt
    apt["direction_preservation"] = cell.apt and MTLConfig(optimizer=cell.optimizer).uses_muon
    mtl["apt"] = apt
    if cell.is_baseline:
        mtl["diagnostics_every"] = 0
    tracking = dict(raw.get("tracking") or {})
    tracking.setdefault("experiment", f"aptrank-{spec.name}")
    raw.update(model=model, mtl=mtl, tracking=tracking)
    return build_config(raw, cell_source(spec, cell), shared_model_sizes=True)


def cell_source(spec: GridSpec, cell: Cell) -> str:
    """How a cell's job config names itself in errors."""
    return f"{spec.source} (job, cell {cell.id})"


def check_job(spec: GridSpec) -> None:
    """Refuse a ``job`` section that any cell's config would break (before any work starts)."""
    from aptrank.pipeline.experiment.grid import GridError

    for key in GRID_OWNED:
        if key in spec.job:
            raise GridError(spec.source, f"job.{key}", "set by the grid (seeds, datasets, name); remove it from job")
    for method in spec.method_kwargs:
        if method not in spec.methods:
            raise GridError(spec.source, f"method_kwargs.{method}", f"not a method of this grid {list(spec.methods)}")
    dataset, seed = next(iter(spec.datasets)), spec.seeds[0]
    cells = [
        Cell(dataset, a, m, o, apt, seed)
        for a in spec.archs
        for m in spec.methods
        for o in spec.optimizers
        for apt in spec.apt
    ]
    if spec.baselines:  # the task name is checked against the FeatureSpec when the model is built
        cells.append(baseline_cell(dataset, "any-task", seed))
    for cell in cells:
        try:
            cell_config(spec, cell)
        except ConfigError as e:  # its key is the job config's (mtl.lr, model.num_experts)
            raise GridError(spec.source, f"job.{e.key}" if e.key else "job", f"{e.reason} (cell {cell.id})") from e
