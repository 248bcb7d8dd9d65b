"""PNG plots of a training run, for MLflow artifacts: drawn with matplotlib's Agg canvas (no
pyplot, no display, no global backend switch).

* per-task learning curves: training loss and validation AUC per epoch (from the trainer history);
* gradient-cosine heatmap: mean over logged steps of the pairwise task-gradient cosines
  ``grad_cos/<i>_<j>`` or ``cos/[<layer>/]<i>_<j>`` (Yu et al., "Gradient Surgery for Multi-Task
  Learning", NeurIPS 2020, use this cosine to detect conflicting gradients);
* rAU histogram: the last logged ``[adatask/]rau/<param>/<task>`` per parameter and task, the
  relative update share of AdaTask (Yang et al., AAAI 2023); a line marks the balanced share 1/K;
* instant-gradient share over steps: ``[apt/]instant_share`` (and ``cos_grad_update`` /
  ``update_cos`` when logged), APT's diagnostic ||(1-β_t) d_t|| / ||m_t|| (ALGORITHMS.md, "APT").

Keys are matched by ``/``-separated segment, so any namespace prefix works; a task is named by its
name, its index or ``task<index>`` (mapped onto the run's task names).

Each plot is built only from data that was logged: a plot with no data is skipped, never faked.
The ``*_data`` functions hold the arithmetic and are tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: step-indexed diagnostics: key -> [(step, value), ...]
Series = Mapping[str, Sequence[tuple[int, float]]]

LEARNING_CURVES = "learning_curves.png"
GRAD_COSINE = "grad_cosine.png"
RAU_HISTOGRAM = "rau_histogram.png"
INSTANT_SHARE = "instant_share.png"
DPI = 100
COSINE_SEGMENTS = ("cos", "grad_cos")
SHARE_SEGMENTS = ("instant_share",)
UPDATE_COS_SEGMENTS = ("update_cos", "cos_grad_update")


def learning_curve_data(history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """task -> {"epoch", "train_loss", "valid_auc"} (NaN where an epoch lacks the value)."""
    out: dict[str, dict[str, list[float]]] = {}
    for record in history:
        losses = record.get("train_loss") or {}
        valid = (record.get("valid") or {}).get("tasks") or {}
        for task in [*losses, *(t for t in valid if t not in losses)]:
            curve = out.setdefault(task, {"epoch": [], "train_loss": [], "valid_auc": []})
            curve["epoch"].append(float(record.get("epoch", len(curve["epoch"]))))
            curve["train_loss"].append(float(losses.get(task, np.nan)))
            curve["valid_auc"].append(float((valid.get(task) or {}).get("auc", np.nan)))
    return out


def _task(ref: str, tasks: Sequence[str]) -> str | None:
    """A task reference in a key (``"click"``, ``"1"``, ``"task1"``) -> its name (index when
    ``tasks`` is empty); None when it names no task."""
    if ref in tasks:
        return ref
    digits = ref.removeprefix("task")
    if digits.isdigit():
        k = int(digits)
        return (tasks[k] if k < len(tasks) else None) if tasks else digits
    return None


def _pair(text: str, tasks: Sequence[str]) -> tuple[str, str] | None:
    """``"0_1"``, ``"task0_task1"``, ``"click_long_view"`` -> the two task names, else None."""
    for cut in (i for i, ch in enumerate(text) if ch == "_"):
        a, b = _task(text[:cut], tasks), _task(text[cut + 1 :], tasks)
        if a is not None and b is not None:
            return a, b
    return None


def cosine_matrix_data(series: Series, tasks: Sequence[str] = ()) -> tuple[list[str], np.ndarray] | None:
    """(labels, K×K matrix) from keys ``[.../]cos|grad_cos/[<layer>/]<i>_<j>``: mean of every
    logged value (all layers and steps), symmetric, 1 on the diagonal, NaN for a pair never
    logged; None without cosines."""
    sums: dict[tuple[str, str], list[float]] = {}
    for key, points in series.items():
        parts = key.split("/")
        if not points or not any(p in COSINE_SEGMENTS for p in parts[:-1]):
            continue
        pair = _pair(parts[-1], tasks)
        if pair is not None:
            sums.setdefault(pair, []).extend(v for _, v in points)
    if not sums:
        return None
    names = {n for p in sums for n in p}
    labels = [t for t in tasks if t in names] if tasks else sorted(names, key=int)
    index = {n: i for i, n in enumerate(labels)}
    matrix = np.full((len(labels), len(labels)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for (a, b), values in sums.items():
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = float(np.mean(values))
    return labels, matrix


def rau_data(series: Series, tasks: Sequence[str] = ()) -> dict[str, list[float]]:
    """task -> the last logged rAU of every parameter (keys ``[.../]rau/<param>/<task>``), in key order."""
    out: dict[str, list[float]] = {}
    for key in sorted(series):
        parts = key.split("/")
        if "rau" not in parts[:-2] or not series[key]:
            continue
        task = _task(parts[-1], tasks)
        if task is not None:
            out.setdefault(task, []).append(float(max(series[key], key=lambda p: p[0])[1]))
    return out


def segment_data(series: Series, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (steps, values) sorted by step, for every key with a ``/``-segment in ``names``."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(series):
        if series[key] and any(p in names for p in key.split("/")):
            pts = sorted(series[key])
            out[key] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=np.float64))
    return out


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    data = learning_curve_data(history)
    if not data:
        return None
    fig = Figure(figsize=(4.0 * len(data), 3.2), layout="constrained")
    for k, (task, curve) in enumerate(data.items()):
        ax = fig.add_subplot(1, len(data), k + 1)
        ax.plot(curve["epoch"], curve["train_loss"], "o-", color="tab:blue", label="train loss")
        ax.set(title=task, xlabel="epoch", ylabel="train loss")
        auc_ax = ax.twinx()
        auc_ax.plot(curve["epoch"], curve["valid_auc"], "s--", color="tab:orange", label="valid AUC")
        auc_ax.set_ylabel("valid AUC")
    fig.legend(handles=[*ax.get_lines(), *auc_ax.get_lines()], loc="outside lower center", ncols=2)
    return _save(fig, path)


def plot_cosine_heatmap(series: Series, tasks: Sequence[str], path: Path) -> Path | None:
    data = cosine_matrix_data(series, tasks)
    if data is None:
        return None
    labels, matrix = data
    size = 1.2 + 0.9 * len(labels)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        title="mean gradient cosine",
    )
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if abs(value) > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def plot_rau_histogram(series: Series, tasks: Sequence[str], path: Path) -> Path | None:
    data = rau_data(series, tasks)
    if not data:
        return None
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    for task, values in data.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=task)
    ax.axvline(1.0 / len(data), color="black", linestyle=":", label="1/K")
    ax.set(xlabel="rAU (last logged)", ylabel="parameters", title="relative update share per task")
    ax.legend()
    return _save(fig, path)


def plot_instant_share(series: Series, path: Path) -> Path | None:
    panels = [
        (label, d)
        for label, names in (("instant-gradient share", SHARE_SEGMENTS), ("cos(gradient, update)", UPDATE_COS_SEGMENTS))
        if (d := segment_data(series, names))
    ]
    if not panels or not panels[0][0].startswith("instant"):
        return None
    fig = Figure(figsize=(6.0, 2.8 * len(panels)), layout="constrained")
    for k, (label, data) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        for key, (steps, values) in data.items():
            ax.plot(steps, values, linewidth=1.0, label=key)
        ax.set(xlabel="step", ylabel=label)
        if len(data) > 1:
            ax.legend(fontsize=7)
    return _save(fig, path)


def write_plots(
    out_dir: str | Path, history: Sequence[Mapping[str, Any]], series: Series, tasks: Sequence[str] = ()
) -> list[Path]:
    """Write every plot that has data into ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_learning_curves(history, out / LEARNING_CURVES),
        plot_cosine_heatmap(series, tasks, out / GRAD_COSINE),
        plot_rau_histogram(series, tasks, out / RAU_HISTOGRAM),
        plot_instant_share(series, out / INSTANT_SHARE),
    ]
    return [p for p in written if p is not None]
