"""The papers' observations measured on a grid's runs (the arithmetic behind the grid plots).

1. **Instant-gradient share** (Zhou et al. 2026, arXiv 2604.08939; ALGORITHMS.md "APT"): with EMA
   momentum the MTL-corrected gradient of a step enters the update with weight (1 − β). apt logs
   ``apt/instant_share`` = ||(1 − β_t) d_t|| / ||m_t|| over the shared tensors every
   ``mtl.diagnostics_every`` steps; here it is averaged per (optimizer, APT) over the runs, per step.
2. **Task dominance** (Yang et al., "AdaTask", AAAI 2023): the relative accumulative update rAU_k of
   each task. Under AdaTask apt logs rAU per shared parameter (``adatask/rau/<param>/task<k>``);
   we average the last logged value over parameters. Under AdamW apt keeps no per-task moments, so
   the AdamW side is a proxy: task k's share of the gradient energy of the shared parameters,
   ||g_k||² / Σ_j ||g_j||² (from ``grad_norm/<task>``), averaged over logged steps. Both use EW
   runs without APT (the AdaTask paper's setting); 1/K is perfect balance.
3. **Effect of APT per base method**: test AUC averaged over tasks, APT on minus off, paired by
   (arch, seed); mean and spread over the pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aptrank.pipeline.experiment.stats import Stat
from aptrank.pipeline.experiment.store import CellRecord
from aptrank.pipeline.plots import rau_data

SHARE_KEY = "apt/instant_share"
NORM_PREFIX = "grad_norm/"
DOMINANCE_METHOD = "ew"
ADAMW_PROXY = "AdamW: gradient-energy share"
ADATASK_RAU = "AdaTask: rAU"


@dataclass(frozen=True)
class ShareCurve:
    steps: np.ndarray
    mean: np.ndarray  # mean over runs at each step
    runs: int
    summary: Stat  # per run: mean share over its logged steps after the first (step 0 is 1 by definition)


def instant_share_data(records: Sequence[CellRecord]) -> dict[tuple[str, bool], ShareCurve]:
    """(optimizer, APT) -> the instant-gradient share curve of its multi-task runs."""
    groups: dict[tuple[str, bool], list[list[tuple[int, float]]]] = {}
    for r in records:
        points = r.series.get(SHARE_KEY)
        if r.cell.task is None and points:
            groups.setdefault((r.cell.optimizer, r.cell.apt), []).append(sorted(points))
    out: dict[tuple[str, bool], ShareCurve] = {}
    for key, runs in groups.items():
        by_step: dict[int, list[float]] = {}
        for pts in runs:
            for step, value in pts:
                by_step.setdefault(step, []).append(value)
        steps = np.array(sorted(by_step))
        mean = np.array([np.mean(by_step[s]) for s in steps])
        summary = Stat.of([float(np.mean([v for _, v in pts[1:]])) for pts in runs if len(pts) > 1])
        out[key] = ShareCurve(steps, mean, len(runs), summary)
    return out


def energy_shares(record: CellRecord, tasks: Sequence[str]) -> list[float] | None:
    """Per task, ||g_k||² / Σ_j ||g_j||² averaged over the logged steps (None without norms)."""
    series = [dict(record.series.get(f"{NORM_PREFIX}{t}", [])) for t in tasks]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    rows = []
    for step in steps:
        sq = np.array([s[step] ** 2 for s in series])
        if sq.sum() > 0:
            rows.append(sq / sq.sum())
    return list(np.mean(rows, axis=0)) if rows else None


def rau_shares(record: CellRecord, tasks: Sequence[str]) -> list[float] | None:
    """Per task, the last logged AdaTask rAU averaged over shared parameters (None without rAU)."""
    per_task = rau_data(record.series, tasks)
    if not per_task or any(t not in per_task for t in tasks):
        return None
    return [float(np.mean(per_task[t])) for t in tasks]


def dominance_data(records: Sequence[CellRecord], tasks: Sequence[str]) -> dict[str, dict[str, Stat]]:
    """``ADAMW_PROXY`` / ``ADATASK_RAU`` -> task -> Stat over EW runs without APT (of one dataset)."""
    measures = {ADAMW_PROXY: ("adamw", energy_shares), ADATASK_RAU: ("adatask", rau_shares)}
    out: dict[str, dict[str, Stat]] = {}
    for label, (optimizer, measure) in measures.items():
        shares = [
            s
            for r in records
            if r.cell.task is None
            and r.cell.method == DOMINANCE_METHOD
            and not r.cell.apt
            and r.cell.optimizer == optimizer
            and (s := measure(r, tasks)) is not None
        ]
        if shares:
            out[label] = {t: Stat.of([s[k] for s in shares]) for k, t in enumerate(tasks)}
    return out


def mean_task_auc(record: CellRecord) -> float:
    return Stat.of([m.get("auc") for m in record.test.values()]).mean


def apt_effect_data(records: Sequence[CellRecord]) -> dict[tuple[str, str], Stat]:
    """(method, optimizer) -> Stat of mean-task test AUC with APT minus without, paired by (arch, seed)."""
    auc: dict[tuple, float] = {}
    for r in records:
        if r.cell.task is None:
            auc[(r.cell.method, r.cell.optimizer, r.cell.arch, r.cell.seed, r.cell.apt)] = mean_task_auc(r)
    pairs: dict[tuple[str, str], list[float]] = {}
    for (method, opt, arch, seed, apt), value in auc.items():
        off = auc.get((method, opt, arch, seed, False))
        if apt and off is not None:
            pairs.setdefault((method, opt), []).append(value - off)
    return {k: Stat.of(v) for k, v in pairs.items()}
