"""Cells of a grid: one training run each, and the job config it trains with.

A cell is (dataset, variant, arch, method, optimizer, APT, seed); a single-task baseline cell is
(dataset, variant, ``single_task``, task, seed), trained with EW/AdamW (one task: the method does
not matter) and no diagnostics; a LightGBM cell is (dataset, variant, ``lightgbm``, seed)
(:mod:`aptrank.pipeline.baselines.lightgbm_baseline`; its job config only names the data and the
tracking). A variant's job overrides are merged into the grid's ``job`` before the cell's
choices. "APT on" is ``mtl.apt.momentum: true``, plus ``direction_preservation: true`` when the
optimizer uses Muon (issue #8); every other ``mtl.apt`` key comes from the grid's ``job``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aptrank.apt import MTLConfig
from aptrank.pipeline.config import ConfigError, DataConfig, JobConfig, build_config

if TYPE_CHECKING:
    from aptrank.pipeline.experiment.grid import GridSpec

BASELINE_ARCH = "single_task"
LIGHTGBM_ARCH = "lightgbm"
NO_CHOICE = "-"
"""Method and optimizer of a LightGBM cell (it has neither)."""
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
    variant: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.task is not None

    @property
    def is_lightgbm(self) -> bool:
        return self.arch == LIGHTGBM_ARCH

    @property
    def table(self) -> str:
        """The results table this cell belongs to: ``dataset`` or ``dataset/variant``."""
        return self.dataset if self.variant is None else f"{self.dataset}/{self.variant}"

    @property
    def row(self) -> tuple[str, str, str, str, bool]:
        """The table row this cell belongs to (its seeds are aggregated): (table, arch or
        ``single_task``, method or the baseline's task, optimizer, APT)."""
        return (self.table, self.arch, self.task or self.method, self.optimizer, self.apt)

    @property
    def id(self) -> str:
        """``kuairand/mmoe/pcgrad/adamw/apt-on/seed1``, ``kuairand/single_task/click/seed1`` or
        ``kuairand/lightgbm/seed1`` (``kuairand/<variant>/...`` in a grid with variants): the MLflow
        run name and the cell's folder under ``<workdir>/cells``."""
        if self.task is not None:
            return f"{self.table}/{BASELINE_ARCH}/{self.task}/seed{self.seed}"
        if self.is_lightgbm:
            return f"{self.table}/{LIGHTGBM_ARCH}/seed{self.seed}"
        apt = "apt-on" if self.apt else "apt-off"
        return f"{self.table}/{self.arch}/{self.method}/{self.optimizer}/{apt}/seed{self.seed}"


def baseline_cell(dataset: str, task: str, seed: int, variant: str | None = None) -> Cell:
    return Cell(dataset, BASELINE_ARCH, BASELINE_METHOD, BASELINE_OPTIMIZER, False, seed, task, variant)


def lightgbm_cell(dataset: str, seed: int, variant: str | None = None) -> Cell:
    return Cell(dataset, LIGHTGBM_ARCH, NO_CHOICE, NO_CHOICE, False, seed, None, variant)


def grid_cells(spec: GridSpec, tasks: dict[str, tuple[str, ...]]) -> list[Cell]:
    """Every cell in run order: per dataset and variant the single-task baselines (when on), the
    LightGBM cells (when on), then arch x (method, optimizer, APT) x seed. ``tasks`` maps each
    table (:attr:`Cell.table`) to its task names (from its FeatureSpec)."""
    cells: list[Cell] = []
    for dataset in spec.datasets:
        for v in spec.variant_names:
            table = lightgbm_cell(dataset, 0, v).table
            if spec.baselines:
                cells += [baseline_cell(dataset, t, s, v) for t in tasks[table] for s in spec.seeds]
            if spec.lightgbm:
                cells += [lightgbm_cell(dataset, s, v) for s in spec.seeds]
            cells += [
                Cell(dataset, a, m, o, apt, s, None, v)
                for a in spec.archs
                for m, o, apt in spec.combos
                for s in spec.seeds
            ]
    return cells


def cell_config(spec: GridSpec, cell: Cell, data: DataConfig | None = None) -> JobConfig:
    """The checked job config of ``cell``: the grid's ``job`` with the variant's job overrides and
    the cell's choices set; ``data``: the prepared dataset's source, input and (derived) ETL config
    (default: as the grid declares them). A LightGBM cell's config is the first arch's EW/AdamW one
    (data and tracking)."""
    from aptrank.pipeline.experiment.variants import merged

    if cell.is_lightgbm:
        cell = Cell(
            cell.dataset, spec.archs[0], BASELINE_METHOD, BASELINE_OPTIMIZER, False, cell.seed, None, cell.variant
        )
    overrides = spec.variants[cell.variant].job if cell.variant is not None else {}
    raw: dict[str, Any] = merged(spec.job, overrides)
    decl = spec.datasets[cell.dataset]
    raw["name"], raw["seed"] = spec.name, cell.seed
    raw["data"] = (
        data.to_dict()
        if data is not None
        else {
            "source": decl.source or "canonical",
            "etl_config": decl.etl_config,
            "input": decl.input or f"datasets/{cell.dataset}/raw",
        }
    )
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
    methods = list(dict.fromkeys(m for m, _, _ in spec.combos))
    for method in spec.method_kwargs:
        if method not in methods:
            raise GridError(spec.source, f"method_kwargs.{method}", f"not a method of this grid {methods}")
    dataset, seed = next(iter(spec.datasets)), spec.seeds[0]
    cells = []
    for v in spec.variant_names:
        cells += [Cell(dataset, a, m, o, apt, seed, None, v) for a in spec.archs for m, o, apt in spec.combos]
        if spec.baselines:  # the task name is checked against the FeatureSpec when the model is built
            cells.append(baseline_cell(dataset, "any-task", seed, v))
    for cell in cells:
        try:
            cell_config(spec, cell)
        except ConfigError as e:  # its key is the job config's (mtl.lr, model.num_experts)
            where = "job" if cell.variant is None else f"variants.{cell.variant}.job"
            raise GridError(spec.source, f"{where}.{e.key}" if e.key else where, f"{e.reason} (cell {cell.id})") from e
