"""The grid's numbers: per dataset (and variant), one row per (arch, method, optimizer, APT) and one
for LightGBM, with mean ± std over seeds of every column (per-task test AUC and GAUC with
point-in-time features, per-task test AUC as served, Δm%), the best row per column, and which rows
differ from EW (same arch, optimizer and APT) by more than two standard errors.

* std is the sample standard deviation (ddof 1) over the seeds; SE = std/sqrt(n); with one seed
  both are NaN and nothing is marked.
* The difference of two rows is marked when |mean_a − mean_b| > 2·sqrt(SE_a² + SE_b²) (Welch's
  standard error of a difference of means; roughly a 95% two-sided test for large n).
* Δm% (Maninis et al., CVPR 2019; :func:`aptrank.pipeline.ranking_metrics.delta_m`) of one run is taken against the
  dataset's single-task baselines: per task, the mean over the baseline seeds of each metric in the
  grid's ``delta_m_metrics``. Single-task baselines do not depend on the multi-task arch.
* Every column here is higher-is-better (AUC, GAUC, Δm%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aptrank.pipeline.experiment.cells import BASELINE_ARCH, BASELINE_OPTIMIZER
from aptrank.pipeline.experiment.store import CellRecord
from aptrank.pipeline.ranking_metrics import delta_m

TABLE_METRICS = ("auc", "gauc")
SERVED_METRIC = "auc"
DELTA_M = "delta_m"
REFERENCE_METHOD = "ew"


@dataclass(frozen=True)
class Stat:
    """The finite values of one column over the seeds of a row."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        return cls(tuple(float(v) for v in values if v is not None and math.isfinite(v)))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Column:
    label: str  # "click AUC", "click AUC served", "Δm%"
    task: str | None
    metric: str  # auc, gauc or delta_m
    served: bool = False  # the served evaluation's figure (CellRecord.served) instead of the point-in-time one

    def value(self, record: CellRecord) -> float | None:
        """This column's metric in ``record`` (not Δm%)."""
        return (record.served if self.served else record.test).get(self.task or "", {}).get(self.metric)


@dataclass
class Row:
    arch: str
    method: str
    optimizer: str
    apt: bool
    stats: dict[str, Stat]  # column label -> Stat (a baseline row has no Δm%)
    run_ids: list[str] = field(default_factory=list)
    best: set[str] = field(default_factory=set)
    marks: dict[str, int] = field(default_factory=dict)  # column label -> +1 / -1 vs EW beyond 2 SE


@dataclass
class DatasetTable:
    dataset: str
    tasks: tuple[str, ...]
    columns: list[Column]
    baseline_means: dict[str, dict[str, float]]  # task -> metric -> mean over seeds
    baseline: Row | None  # the single-task baselines, one task per column (no Δm%)
    rows: list[Row]


def columns_for(tasks: Sequence[str], served: bool = False) -> list[Column]:
    """Point-in-time AUC and GAUC per task, the served AUC per task when ``served``, then Δm%."""
    cols = [Column(f"{t} {m.upper()}", t, m) for m in TABLE_METRICS for t in tasks]
    if served:
        cols += [Column(f"{t} {SERVED_METRIC.upper()} served", t, SERVED_METRIC, True) for t in tasks]
    return [*cols, Column("Δm%", None, DELTA_M)]


def mean_metric(records: Sequence[CellRecord], task: str, metric: str) -> float:
    return Stat.of([r.test.get(task, {}).get(metric) for r in records]).mean


def run_delta_m(record: CellRecord, baseline_means: dict[str, dict[str, float]], metrics: Sequence[str]) -> float:
    """Δm% of one run against the baseline means (NaN without baselines)."""
    test = {t: {m: v for m, v in ms.items() if v is not None} for t, ms in record.test.items()}
    return delta_m(test, baseline_means, metrics) if baseline_means else math.nan


def build_table(
    dataset: str, tasks: Sequence[str], records: Sequence[CellRecord], delta_m_metrics: Sequence[str]
) -> DatasetTable:
    """The table of one dataset from its records (in grid order; rows keep that order)."""
    columns = columns_for(tasks, served=any(r.served for r in records))
    groups: dict[tuple, list[CellRecord]] = {}
    by_task: dict[str, list[CellRecord]] = {}
    for r in records:
        if r.cell.task is not None:
            by_task.setdefault(r.cell.task, []).append(r)
        else:
            groups.setdefault(r.cell.row, []).append(r)
    base_means = {t: {m: mean_metric(g, t, m) for m in (*TABLE_METRICS, *delta_m_metrics)} for t, g in by_task.items()}
    baseline = None
    if by_task:
        stats = {
            c.label: Stat.of([c.value(r) for r in by_task.get(c.task, [])])
            for c in columns
            if c.task is not None and not c.served
        }
        baseline = Row(
            BASELINE_ARCH, "-", BASELINE_OPTIMIZER, False, stats, [r.run_id for g in by_task.values() for r in g]
        )
    rows = []
    for (_, arch, method, opt, apt), g in groups.items():
        stats = {
            c.label: Stat.of(
                [run_delta_m(r, base_means, delta_m_metrics) if c.metric == DELTA_M else c.value(r) for r in g]
            )
            for c in columns
        }
        rows.append(Row(arch, method, opt, apt, stats, [r.run_id for r in g]))
    mark_best(rows, columns)
    mark_vs_reference(rows, columns)
    return DatasetTable(dataset, tuple(tasks), columns, base_means, baseline, rows)


def mark_best(rows: Sequence[Row], columns: Sequence[Column]) -> None:
    """Add each column's label to ``best`` of the row(s) with the highest mean (ties: equal up to
    float rounding, so a tie does not depend on the order the seeds were summed in)."""
    for c in columns:
        means = [r.stats[c.label].mean if c.label in r.stats else math.nan for r in rows]
        finite = [m for m in means if math.isfinite(m)]
        if finite:
            top = max(finite)
            for r, m in zip(rows, means, strict=True):
                if math.isclose(m, top, rel_tol=1e-12, abs_tol=1e-15):
                    r.best.add(c.label)


def differs(a: Stat, b: Stat) -> int:
    """+1 / -1 when mean(a) is above / below mean(b) by more than two standard errors, else 0."""
    diff, se = a.mean - b.mean, math.hypot(a.se, b.se)
    if not (math.isfinite(diff) and math.isfinite(se)) or abs(diff) <= 2.0 * se:
        return 0
    return 1 if diff > 0 else -1


def mark_vs_reference(rows: Sequence[Row], columns: Sequence[Column]) -> None:
    """Set ``marks`` of every non-EW row against the EW row of the same arch, optimizer and APT."""
    refs = {(r.arch, r.optimizer, r.apt): r for r in rows if r.method == REFERENCE_METHOD}
    for r in rows:
        ref = refs.get((r.arch, r.optimizer, r.apt))
        if ref is None or ref is r:
            continue
        for c in columns:
            sign = differs(r.stats[c.label], ref.stats[c.label])
            if sign:
                r.marks[c.label] = sign
