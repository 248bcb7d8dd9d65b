"""Rank a grid's rows by their validation AUC: how a hyper-parameter search picks its winner.

The grid report (``aptrank experiment``) shows test figures only; choosing a setting by them would
fit the test day. Each cell's MLflow child run also holds the validation metrics of its best epoch
(``final/valid/<task>/auc``, ``final/valid/mean_auc``: the epoch that early stopping kept, chosen on
the same split). This prints one line per row (table, arch, method, optimizer, APT), sorted by the
mean over seeds of the validation mean AUC, with the per-task validation AUC and, for reference,
the served test AUC (mean ± std over seeds, :class:`aptrank.pipeline.experiment.stats.Stat`); a cell
trained again by a later invocation (after a code change) counts once, with its latest run.
Single-task baselines are left out; LightGBM, which logs no validation figures, comes last:

    .venv/bin/python scripts/grid_valid_ranking.py WORKDIR [WORKDIR ...]

WORKDIR is the grid's ``--workdir`` (its ``parent_run.json`` names the MLflow store and parent run).
Several WORKDIRs pool their rows: grids that train the same rows with other seeds (e.g. a second grid
with more seeds to break a tie) count as one row with all their seeds.
Exit code 2 when a WORKDIR holds no grid run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from aptrank.pipeline.experiment.cells import BASELINE_ARCH
from aptrank.pipeline.experiment.mlflow_runs import PARENT_FILE, PARENT_TAG
from aptrank.pipeline.experiment.stats import Stat
from aptrank.pipeline.experiment.table import format_stat
from aptrank.pipeline.mlflow_store import connect

CELL_TAG = "aptrank.cell"
VALID_MEAN = "final/valid/mean_auc"


def row_of(cell_id: str) -> str:
    """A cell id without its ``/seedN`` tail: the row its seeds are aggregated into."""
    return cell_id.rsplit("/seed", 1)[0]


def tasks_of(metric_keys: list[str]) -> list[str]:
    """The tasks named by ``final/valid/<task>/auc`` keys, in first-seen order."""
    found = (k.split("/")[2] for k in metric_keys if k.startswith("final/valid/") and k.count("/") == 3)
    return list(dict.fromkeys(t for t in found if f"final/valid/{t}/auc" in metric_keys))


def collect(workdir: Path) -> tuple[list[str], dict[str, dict[str, list[float | None]]]]:
    """The grid's tasks, and row -> metric key -> one value per seed (None where the run lacks it)."""
    parent = json.loads((workdir / PARENT_FILE).read_text())
    client = connect(parent["tracking_uri"])
    runs = client.search_runs(
        client.get_run(parent["run_id"]).info.experiment_id,
        filter_string=f"tags.`{PARENT_TAG}` = '{parent['run_id']}' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )
    tasks = tasks_of([k for run in runs for k in run.data.metrics])
    keys = [VALID_MEAN, *(f"final/valid/{t}/auc" for t in tasks), *(f"served/test/{t}/auc" for t in tasks)]
    latest = {run.data.tags[CELL_TAG]: run for run in sorted(runs, key=lambda r: r.info.start_time)}
    rows: dict[str, dict[str, list[float | None]]] = {}
    for run in latest.values():  # one run per cell: one retrained by a later invocation counts once
        metrics = rows.setdefault(row_of(run.data.tags[CELL_TAG]), {k: [] for k in keys})
        for key in keys:
            metrics[key].append(run.data.metrics.get(key))
    return tasks, rows


def main(argv: list[str]) -> int:
    if not argv or not all((Path(a) / PARENT_FILE).is_file() for a in argv):
        usage = f"usage: grid_valid_ranking.py WORKDIR [WORKDIR ...] (grid work dirs with {PARENT_FILE})"
        print(usage, file=sys.stderr)
        return 2
    tasks, rows = collect(Path(argv[0]))
    for more in argv[1:]:  # the same rows with other seeds
        for row, metrics in collect(Path(more))[1].items():
            pooled = rows.setdefault(row, {k: [] for k in metrics})
            for key, values in metrics.items():
                pooled.setdefault(key, []).extend(values)

    def rank(item: tuple[str, dict[str, list[float | None]]]) -> float:
        mean = Stat.of(item[1][VALID_MEAN]).mean
        return -mean if math.isfinite(mean) else math.inf  # rows without validation figures last

    ranked = sorted(((r, m) for r, m in rows.items() if f"/{BASELINE_ARCH}/" not in r), key=rank)
    head = ["row", "seeds", "valid mean AUC", *(f"valid {t}" for t in tasks), *(f"served test {t}" for t in tasks)]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|" + "---:|" * (len(head) - 2))
    for row, metrics in ranked:
        cells = [format_stat(Stat.of(values), 4) for values in metrics.values()]
        print(f"| {row} | {len(metrics[VALID_MEAN])} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
