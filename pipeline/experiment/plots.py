"""PNG plots of a grid's observations (:mod:`aptrank.pipeline.experiment.observations`), drawn with
matplotlib's Agg canvas like :mod:`aptrank.pipeline.plots`. A plot without data is skipped, never faked.

* ``instant_share.png``: instant-gradient share over steps, one panel per optimizer, APT off vs on;
* ``task_dominance.png``: per dataset and task, AdamW's gradient-energy share (proxy) vs AdaTask's
  rAU (EW, APT off), error bars ± one std over runs, dotted line at 1/K;
* ``apt_effect.png``: per dataset, mean-task test AUC with APT minus without, per method and
  optimizer, error bars ± two standard errors over (arch, seed) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from aptrank.pipeline.experiment.observations import ShareCurve
from aptrank.pipeline.experiment.stats import Stat
from aptrank.pipeline.experiment.table import METHOD_NAMES, OPTIMIZER_NAMES, name
from aptrank.pipeline.plots import _save as save_png  # the one Agg-canvas save of the project

INSTANT_SHARE = "instant_share.png"
TASK_DOMINANCE = "task_dominance.png"
APT_EFFECT = "apt_effect.png"


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def plot_instant_share(curves: Mapping[tuple[str, bool], ShareCurve], path: Path) -> Path | None:
    optimizers = list(dict.fromkeys(opt for opt, _ in curves))
    if not optimizers:
        return None
    fig = Figure(figsize=(max(5.5, 4.2 * len(optimizers)), 3.2), layout="constrained")
    for k, opt in enumerate(optimizers):
        ax = fig.add_subplot(1, len(optimizers), k + 1, sharey=fig.axes[0] if k else None)
        for apt, style in ((False, "-"), (True, "--")):
            curve = curves.get((opt, apt))
            if curve is not None:
                ax.plot(curve.steps, curve.mean, style, label=f"APT {'on' if apt else 'off'} ({curve.runs} runs)")
        ax.set(title=name(OPTIMIZER_NAMES, opt), xlabel="step", ylabel="||(1-β)d|| / ||m||", yscale="log")
        ax.legend(fontsize=7)
    fig.suptitle("instant-gradient share of the momentum")
    return save_png(fig, path)


def plot_task_dominance(data: Mapping[str, Mapping[str, Mapping[str, Stat]]], path: Path) -> Path | None:
    """``data``: dataset -> measure label -> task -> Stat."""
    datasets = [d for d, measures in data.items() if measures]
    if not datasets:
        return None
    fig = Figure(figsize=(max(5.5, 4.2 * len(datasets)), 3.4), layout="constrained")
    for k, dataset in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), k + 1)
        measures = data[dataset]
        tasks = list(next(iter(measures.values())))
        width = 0.8 / len(measures)
        for j, (label, per_task) in enumerate(measures.items()):
            x = np.arange(len(tasks)) + (j - (len(measures) - 1) / 2) * width
            ax.bar(
                x,
                [per_task[t].mean for t in tasks],
                width,
                label=label,
                yerr=[_finite(per_task[t].std) for t in tasks],
                capsize=3,
            )
        ax.axhline(1.0 / len(tasks), color="black", linestyle=":", label="1/K")
        ax.set(title=dataset, xticks=range(len(tasks)), xticklabels=tasks, ylabel="share of the update", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle("task dominance (EW, APT off)")
    return save_png(fig, path)


def plot_apt_effect(data: Mapping[str, Mapping[tuple[str, str], Stat]], path: Path) -> Path | None:
    """``data``: dataset -> (method, optimizer) -> Stat of AUC(APT on) − AUC(APT off)."""
    datasets = [d for d, effects in data.items() if effects]
    if not datasets:
        return None
    fig = Figure(
        figsize=(max(5.0, 0.9 * max(len(data[d]) for d in datasets)) * 1.0, 3.2 * len(datasets)), layout="constrained"
    )
    for k, dataset in enumerate(datasets):
        ax = fig.add_subplot(len(datasets), 1, k + 1)
        effects = data[dataset]
        methods = list(dict.fromkeys(m for m, _ in effects))
        optimizers = list(dict.fromkeys(o for _, o in effects))
        width = 0.8 / len(optimizers)
        for j, opt in enumerate(optimizers):
            stats = [effects.get((m, opt), Stat(())) for m in methods]
            x = np.arange(len(methods)) + (j - (len(optimizers) - 1) / 2) * width
            ax.bar(
                x,
                [_finite(s.mean) for s in stats],
                width,
                yerr=[2 * _finite(s.se) for s in stats],
                capsize=3,
                label=name(OPTIMIZER_NAMES, opt),
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set(
            title=dataset,
            xticks=range(len(methods)),
            xticklabels=[name(METHOD_NAMES, m) for m in methods],
            ylabel="Δ mean AUC (APT on − off)",
        )
        ax.legend(fontsize=7)
    return save_png(fig, path)


def write_grid_plots(
    out_dir: Path,
    share: Mapping[tuple[str, bool], ShareCurve],
    dominance: Mapping[str, Mapping[str, Mapping[str, Stat]]],
    effect: Mapping[str, Mapping[tuple[str, str], Stat]],
) -> list[Path]:
    """Write every plot that has data into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Sequence[Path | None] = (
        plot_instant_share(share, out_dir / INSTANT_SHARE),
        plot_task_dominance(dominance, out_dir / TASK_DOMINANCE),
        plot_apt_effect(effect, out_dir / APT_EFFECT),
    )
    return [p for p in written if p is not None]
