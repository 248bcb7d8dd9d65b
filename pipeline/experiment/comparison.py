"""The report's comparison of served test AUC against a reference row (issue #19's acceptance).

Per task, every row's served AUC (mean ± std over seeds) is set against the grid's ``reference`` row
(default: LightGBM of the same table, i.e. the same dataset and variant; ``reference.table`` names
another table, e.g. the current default's) with the difference of means and ▲ / ▼ when it exceeds
two standard errors of the difference (:func:`aptrank.pipeline.experiment.stats.differs`, Welch). A
row *beats* the reference when it is ▲ on every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aptrank.config_model import ConfigModel
from aptrank.pipeline.experiment.cells import LIGHTGBM_ARCH, NO_CHOICE
from aptrank.pipeline.experiment.stats import DatasetTable, Row, Stat, differs
from aptrank.pipeline.experiment.table import DASH, MARKS, format_stat, render_row


class RowRef(ConfigModel):
    """A table row: arch, method, optimizer, APT; ``table`` (``dataset`` or ``dataset/variant``):
    None = the compared row's own table."""

    arch: str = LIGHTGBM_ARCH
    method: str = NO_CHOICE
    optimizer: str = NO_CHOICE
    apt: bool = False
    table: str | None = None

    def matches(self, row: Row) -> bool:
        return (row.arch, row.method, row.optimizer, row.apt) == (self.arch, self.method, self.optimizer, self.apt)


@dataclass(frozen=True)
class Versus:
    """One task of one row against the reference: the row's stat, the reference's, the mark."""

    stat: Stat
    reference: Stat
    mark: int  # +1 / -1 beyond two standard errors, else 0

    @property
    def delta(self) -> float:
        return self.stat.mean - self.reference.mean


def served_label(task: str) -> str:
    from aptrank.pipeline.experiment.stats import SERVED_METRIC

    return f"{task} {SERVED_METRIC.upper()} served"


def reference_row(ref: RowRef, table: DatasetTable, tables: Sequence[DatasetTable]) -> Row | None:
    source = next((t for t in tables if t.dataset == ref.table), None) if ref.table else table
    return next((r for r in source.rows if ref.matches(r)), None) if source else None


def compare(ref: RowRef, tables: Sequence[DatasetTable]) -> dict[str, list[tuple[Row, dict[str, Versus]]]]:
    """Table -> [(row, task -> Versus)] for every row with served figures, the reference's excluded."""
    out: dict[str, list[tuple[Row, dict[str, Versus]]]] = {}
    for table in tables:
        base = reference_row(ref, table, tables)
        if base is None:
            continue
        rows = []
        for row in table.rows:
            if row is base or not any(row.stats.get(served_label(t), Stat(())).n for t in table.tasks):
                continue
            per = {}
            for t in table.tasks:
                a, b = row.stats.get(served_label(t), Stat(())), base.stats.get(served_label(t), Stat(()))
                per[t] = Versus(a, b, differs(a, b))
            rows.append((row, per))
        if rows:
            out[table.dataset] = rows
    return out


def beats(per: dict[str, Versus]) -> bool:
    return bool(per) and all(v.mark > 0 for v in per.values())


def comparison_markdown(ref: RowRef, tables: Sequence[DatasetTable]) -> list[str]:
    """The report section (empty when no table has the reference row)."""
    result = compare(ref, tables)
    if not result:
        return []
    parts = render_row(Row(ref.arch, ref.method, ref.optimizer, ref.apt, {}), []).strip("| ").split(" | ")
    who = " ".join(p for p in parts[:3] if p != DASH) + (" + APT" if ref.apt else "")
    lines = [
        f"## Served test AUC against {who}" + (f" of `{ref.table}`" if ref.table else " (same table)"),
        "",
        "Per task: mean ± std over seeds of the served AUC, (difference of means to the reference); ▲ / ▼: "
        "above / below the reference by more than two standard errors of the difference; *beats*: ▲ on every task.",
        "",
    ]
    for name, rows in result.items():
        tasks = next((list(per) for _, per in rows), [])
        lines += [f"### `{name}`", "", "| arch | method | optimizer | APT | " + " | ".join(tasks) + " | beats |"]
        lines.append("|" + "|".join(["---"] * 4 + ["---:"] * len(tasks) + ["---"]) + "|")
        for row, per in rows:
            head = render_row(row, []).rstrip(" |")
            cells = [_versus(v) for v in per.values()]
            lines.append(f"{head} | " + " | ".join(cells) + f" | {'yes' if beats(per) else 'no'} |")
        lines.append("")
    return lines


def _versus(v: Versus) -> str:
    if v.stat.n == 0 or v.reference.n == 0:
        return DASH
    mark = MARKS.get(v.mark)
    return f"{format_stat(v.stat, 4)} ({v.delta:+.4f}{' ' + mark if mark else ''})"


def comparison_json(ref: RowRef, tables: Sequence[DatasetTable]) -> dict[str, Any]:
    from aptrank.pipeline.tracking import as_number

    return {
        "reference": ref.to_dict(),
        "tables": {
            name: [
                {
                    "arch": row.arch,
                    "method": row.method,
                    "optimizer": row.optimizer,
                    "apt": row.apt,
                    "beats": beats(per),
                    "tasks": {
                        t: {"mean": as_number(v.stat.mean), "std": as_number(v.stat.std), "delta": as_number(v.delta)}
                        | {"mark": v.mark}
                        for t, v in per.items()
                    },
                }
                for row, per in rows
            ]
            for name, rows in compare(ref, tables).items()
        },
    }
