"""A grid's outputs: ``results.md`` (the exact command, runtime, one table per dataset, the
observations with their plots), ``results.json`` (every number behind them) and the plots in
``results/``; :func:`copy_to_docs` puts ``results.md`` as the grid's section into the docs folder's
``results.md`` and the plots into ``results/<grid name>/``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aptrank.pipeline.experiment.comparison import comparison_json, comparison_markdown
from aptrank.pipeline.experiment.grid import GridSpec
from aptrank.pipeline.experiment.observations import (
    ShareCurve,
    apt_effect_data,
    dominance_data,
    instant_share_data,
)
from aptrank.pipeline.experiment.plots import APT_EFFECT, INSTANT_SHARE, TASK_DOMINANCE, write_grid_plots
from aptrank.pipeline.experiment.stats import DatasetTable, Row, Stat, build_table
from aptrank.pipeline.experiment.store import CellRecord
from aptrank.pipeline.experiment.table import LEGEND, METHOD_NAMES, OPTIMIZER_NAMES, format_stat, name, render_table
from aptrank.pipeline.tracking import as_number

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
PLOTS_DIR = "results"


@dataclass
class GridReport:
    spec: GridSpec
    command: str
    runtime: dict[str, float]
    tasks: dict[str, tuple[str, ...]]
    records: list[CellRecord]
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> error
    mlflow: dict[str, str] = field(default_factory=dict)  # parent run id, tracking uri

    def by_dataset(self, dataset: str) -> list[CellRecord]:
        """The records of one table (``dataset`` or ``dataset/variant``)."""
        return [r for r in self.records if r.cell.table == dataset]

    @property
    def tables(self) -> list[DatasetTable]:
        return [build_table(d, self.tasks[d], self.by_dataset(d), self.spec.delta_m_metrics) for d in self.tasks]

    @property
    def share(self) -> dict[tuple[str, bool], ShareCurve]:
        return instant_share_data(self.records)

    @property
    def dominance(self) -> dict[str, dict[str, dict[str, Stat]]]:
        return {d: dominance_data(self.by_dataset(d), self.tasks[d]) for d in self.tasks}

    @property
    def effect(self) -> dict[str, dict[tuple[str, str], Stat]]:
        return {d: apt_effect_data(self.by_dataset(d)) for d in self.tasks}


def write_report(report: GridReport, workdir: Path) -> list[Path]:
    """Write the plots, ``results.json`` and ``results.md`` into ``workdir``; return the files."""
    tables, share, dominance, effect = report.tables, report.share, report.dominance, report.effect
    plots = write_grid_plots(workdir / PLOTS_DIR, share, dominance, effect)
    data = results_json(report, tables, share, dominance, effect)
    (workdir / RESULTS_JSON).write_text(json.dumps(data, indent=1, sort_keys=True))
    (workdir / RESULTS_MD).write_text(
        results_markdown(report, tables, share, dominance, effect, {p.name for p in plots})
    )
    return [workdir / RESULTS_MD, workdir / RESULTS_JSON, *plots]


def copy_to_docs(workdir: Path, docs: Path, name: str) -> list[Path]:
    """The grid's ``results.md`` as its section of ``docs/results.md`` (:func:`merge_section`: other
    grids' sections and any hand-written text stay), ``results/*.png`` -> ``docs/results/<name>/``
    (the section's plot links point there)."""
    plots = docs / PLOTS_DIR / name
    plots.mkdir(parents=True, exist_ok=True)
    target = docs / RESULTS_MD
    section = (workdir / RESULTS_MD).read_text().replace(f"]({PLOTS_DIR}/", f"]({PLOTS_DIR}/{name}/")
    target.write_text(merge_section(target.read_text() if target.is_file() else "", name, section))
    return [target, *(Path(shutil.copyfile(p, plots / p.name)) for p in sorted((workdir / PLOTS_DIR).glob("*.png")))]


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- grid {name}: begin (written by aptrank experiment --docs) -->", f"<!-- grid {name}: end -->"


def merge_section(document: str, name: str, section: str) -> str:
    """``document`` with grid ``name``'s section (between its markers) replaced by ``section``, or
    ``section`` appended when the document has none yet."""
    begin, end = section_markers(name)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    if begin in document and end in document.split(begin, 1)[1]:
        head, rest = document.split(begin, 1)
        return head + block + rest.split(end, 1)[1].removeprefix("\n")
    return f"{document.rstrip()}\n\n{block}" if document.strip() else block


# ---- JSON ---------------------------------------------------------------------------------------
def stat_json(s: Stat) -> dict[str, Any]:
    return {
        "mean": as_number(s.mean),
        "std": as_number(s.std),
        "se": as_number(s.se),
        "n": s.n,
        "values": list(s.values),
    }


def row_json(row: Row) -> dict[str, Any]:
    return {
        "arch": row.arch,
        "method": row.method,
        "optimizer": row.optimizer,
        "apt": row.apt,
        "run_ids": row.run_ids,
        "columns": {k: stat_json(v) for k, v in row.stats.items()},
        "best": sorted(row.best),
        "vs_ew": row.marks,
    }


def results_json(
    report: GridReport, tables: Sequence[DatasetTable], share: dict, dominance: dict, effect: dict
) -> dict[str, Any]:
    return {
        "grid": report.spec.to_dict(),
        "grid_file": report.spec.source,
        "command": report.command,
        "runtime": report.runtime,
        "mlflow": report.mlflow,
        "failed": report.failed,
        "datasets": {
            t.dataset: {
                "tasks": list(t.tasks),
                "columns": [c.label for c in t.columns],
                "baseline_means": {k: {m: as_number(v) for m, v in ms.items()} for k, ms in t.baseline_means.items()},
                "baseline": row_json(t.baseline) if t.baseline else None,
                "rows": [row_json(r) for r in t.rows],
            }
            for t in tables
        },
        "observations": {
            "instant_share": [
                {
                    "optimizer": o,
                    "apt": a,
                    "runs": c.runs,
                    "steps": c.steps.tolist(),
                    "mean": c.mean.tolist(),
                    "per_run_mean_after_first_step": stat_json(c.summary),
                }
                for (o, a), c in share.items()
            ],
            "task_dominance": {
                d: {label: {t: stat_json(s) for t, s in per.items()} for label, per in m.items()}
                for d, m in dominance.items()
            },
            "apt_effect": {
                d: [{"method": m, "optimizer": o, **stat_json(s)} for (m, o), s in e.items()] for d, e in effect.items()
            },
        },
        "served_comparison": [comparison_json(ref, tables) for ref in report.spec.references],
        "cells": [
            {"id": r.cell.id, "run_id": r.run_id, "key": r.key, "seconds": r.seconds, "served": r.served}
            for r in report.records
        ],
    }


# ---- Markdown -----------------------------------------------------------------------------------
def results_markdown(
    report: GridReport, tables: Sequence[DatasetTable], share: dict, dominance: dict, effect: dict, plots: set[str]
) -> str:
    spec, rt = report.spec, report.runtime
    lines = [
        f"# Research grid `{spec.name}`",
        "",
        f"Command: `{report.command}`",
        "",
        f"Runtime: {rt['wall_s']:.0f} s for this invocation ({int(rt['cells_trained'])} cells trained, "
        f"{int(rt['cells_reused'])} reused from an earlier run); {rt['cell_seconds_total']:.0f} s of cell "
        f"training and evaluation in all ({int(rt['cells'])} cells; {int(rt['workers'])} worker(s) now).",
        "",
        f"Grid `{spec.source}`: datasets {list(spec.datasets)}, "
        + (f"variants {list(spec.variants)}, " if spec.variants else "")
        + f"archs {list(spec.archs)}, {_combos(spec)}, seeds {list(spec.seeds)}"
        + (", LightGBM baselines" if spec.lightgbm else "")
        + f"; Δm% over {list(spec.delta_m_metrics)}. MLflow parent run "
        f"`{report.mlflow.get('parent_run_id', '')}` in `{report.mlflow.get('tracking_uri', '')}`.",
        "",
    ]
    for t in tables:
        lines += [f"## Dataset `{t.dataset}`", "", render_table(t), "", LEGEND, ""]
    for ref in spec.references:
        lines += comparison_markdown(ref, tables)
    lines += [
        "## Observations",
        "",
        "### Share of the instant gradient in the update",
        "",
        "| optimizer | APT | runs | mean share after step 0 |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {name(OPTIMIZER_NAMES, o)} | {'on' if a else 'off'} | {c.runs} | {format_stat(c.summary, 4)} |"
        for (o, a), c in share.items()
    ]
    lines += _image(INSTANT_SHARE, plots)
    lines += [
        "### Task dominance (EW, APT off)",
        "",
        "| dataset | measure | "
        + " | ".join(f"task {k + 1}" for k in range(max((len(v) for v in report.tasks.values()), default=0)))
        + " |",
        "|---|---|" + "---:|" * max((len(v) for v in report.tasks.values()), default=0),
    ]
    for d, measures in dominance.items():
        for label, per in measures.items():
            lines.append(f"| {d} | {label} | " + " | ".join(f"{t}: {format_stat(s, 3)}" for t, s in per.items()) + " |")
    lines += _image(TASK_DOMINANCE, plots)
    lines += [
        "### Effect of APT on each base method (mean-task test AUC, on − off)",
        "",
        "| dataset | method | optimizer | Δ AUC (mean ± std over arch × seed pairs) |",
        "|---|---|---|---:|",
    ]
    for d, e in effect.items():
        lines += [
            f"| {d} | {name(METHOD_NAMES, m)} | {name(OPTIMIZER_NAMES, o)} | {format_stat(s, 4, signed=True)} |"
            for (m, o), s in e.items()
        ]
    lines += _image(APT_EFFECT, plots)
    if report.failed:
        lines += ["## Failed cells (rerun the command to retry them)", ""]
        lines += [f"- `{cell}`: {error}" for cell, error in report.failed.items()]
    return "\n".join(lines).rstrip() + "\n"


def _combos(spec: GridSpec) -> str:
    if spec.configurations:
        named = [f"{name(METHOD_NAMES, m)}+{name(OPTIMIZER_NAMES, o)}{'+APT' if a else ''}" for m, o, a in spec.combos]
        return f"configurations {named}"
    apt = ["on" if a else "off" for a in spec.apt]
    return f"methods {list(spec.methods)}, optimizers {list(spec.optimizers)}, APT {apt}"


def _image(file: str, plots: set[str]) -> list[str]:
    return ["", f"![{file}]({PLOTS_DIR}/{file})", ""] if file in plots else ["", "(no data for this plot)", ""]
