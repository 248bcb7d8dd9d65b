"""Markdown for the grid tables (:mod:`aptrank.pipeline.experiment.stats`): one table per dataset, a
single-task baseline row first, then one row per (arch, method, optimizer, APT).

A cell reads ``mean ± std`` over seeds (AUC/GAUC with 4 decimals, Δm% with 2); the best mean of a
column is **bold**; ▲ / ▼ mark a mean above / below the EW row of the same arch, optimizer and APT
by more than two standard errors. ``–`` is a std that needs two seeds or a value that does not exist.
"""

from __future__ import annotations

import math

from aptrank.pipeline.experiment.stats import DELTA_M, Column, DatasetTable, Row, Stat

METHOD_NAMES = {
    "ew": "EW",
    "uw": "UW",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "cagrad": "CAGrad",
    "nash_mtl": "Nash-MTL",
    "imgrad": "IMGrad",
    "sdmgrad": "SDMGrad",
    "aligned_mtl": "Aligned-MTL",
    "dwa": "DWA",
    "gradnorm": "GradNorm",
    "rlw": "RLW",
}
OPTIMIZER_NAMES = {"adamw": "AdamW", "adatask": "AdaTask", "muon": "Muon", "adatask_muon": "AdaTask+Muon"}
ARCH_NAMES = {
    "mmoe": "MMoE",
    "ple": "PLE",
    "shared_bottom": "Shared-Bottom",
    "single_task": "single-task",
    "lightgbm": "LightGBM",
}
MARKS = {1: "▲", -1: "▼"}
DASH = "–"
LEGEND = (
    "mean ± std over seeds; **bold**: best mean in the column; ▲ / ▼: above / below EW with the same "
    "arch, optimizer and APT by more than two standard errors; Δm%: against the single-task baselines "
    "(first row); AUC served: the test split scored through the exported model (LightGBM: the same "
    "feature lookup) with the snapshot as of the end of the validation split."
)


def name(kind: dict[str, str], key: str) -> str:
    return kind.get(key, key)


def format_stat(stat: Stat, digits: int, signed: bool = False) -> str:
    if stat.n == 0:
        return DASH
    mean = f"{stat.mean:+.{digits}f}" if signed else f"{stat.mean:.{digits}f}"
    std = f"{stat.std:.{digits}f}" if math.isfinite(stat.std) else DASH
    return f"{mean} ± {std}"


def format_cell(row: Row, column: Column) -> str:
    stat = row.stats.get(column.label)
    if stat is None:
        return DASH
    delta = column.metric == DELTA_M
    text = format_stat(stat, 2 if delta else 4, signed=delta)
    if column.label in row.best:
        text = f"**{text}**"
    mark = MARKS.get(row.marks.get(column.label, 0))
    return f"{text} {mark}" if mark else text


def render_row(row: Row, columns: list[Column]) -> str:
    method = DASH if row.method == "-" else name(METHOD_NAMES, row.method)
    optimizer = DASH if row.optimizer == "-" else name(OPTIMIZER_NAMES, row.optimizer)
    head = [name(ARCH_NAMES, row.arch), method, optimizer, "on" if row.apt else "off"]
    return "| " + " | ".join([*head, *(format_cell(row, c) for c in columns)]) + " |"


def render_table(table: DatasetTable) -> str:
    """The Markdown table of one dataset (header, alignment line, rows)."""
    header = ["arch", "method", "optimizer", "APT", *(c.label for c in table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(table.columns)) + "|"]
    if table.baseline is not None:
        lines.append(render_row(table.baseline, table.columns))
    lines += [render_row(r, table.columns) for r in table.rows]
    return "\n".join(lines)
