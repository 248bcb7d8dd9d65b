"""A finished cell's result JSON (``<workdir>/cells/<cell id>/result.json``): what the tables and
plots are built from, and what makes a rerun skip the cell.

The file is written last, atomically, after the cell's MLflow child run ended FINISHED; a rerun
skips a cell whose file exists with the same ``key`` (:func:`aptrank.pipeline.registry.version_key` of the
cell's job config and its dataset's fingerprint) and retrains any other.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aptrank.pipeline.experiment.cells import Cell

CELLS_DIR = "cells"
RESULT_FILE = "result.json"
#: Diagnostics kept for the grid plots (everything else stays in MLflow): APT's instant-gradient
#: share, the per-task gradient norms and AdaTask's rAU.
KEPT_SERIES = ("apt/instant_share", "grad_norm/", "adatask/rau/")


@dataclass
class CellRecord:
    cell: Cell
    key: str
    run_id: str
    test: dict[str, dict[str, float | None]]  # task -> test metric -> value (None: not finite)
    best_epoch: int
    seconds: float
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    served: dict[str, dict[str, float | None]] = field(default_factory=dict)  # task -> served test metric

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["series"] = {k: [list(p) for p in v] for k, v in self.series.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellRecord:
        series = {k: [(int(s), float(v)) for s, v in pts] for k, pts in d.get("series", {}).items()}
        return cls(
            Cell(**d["cell"]),
            d["key"],
            d["run_id"],
            d["test"],
            int(d["best_epoch"]),
            float(d["seconds"]),
            series,
            d.get("served", {}),
        )


def cell_dir(workdir: Path, cell: Cell) -> Path:
    return workdir / CELLS_DIR / cell.id


def kept_series(diagnostics: list[tuple[int, dict[str, float]]]) -> dict[str, list[tuple[int, float]]]:
    """The :data:`KEPT_SERIES` keys of recorded diagnostics, as key -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for step, stats in diagnostics:
        for key, value in stats.items():
            if key.startswith(KEPT_SERIES):
                out.setdefault(key, []).append((int(step), float(value)))
    return out


def write_record(workdir: Path, record: CellRecord) -> Path:
    path = cell_dir(workdir, record.cell) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_record(workdir: Path, cell: Cell, key: str, served: bool = False) -> CellRecord | None:
    """The cell's record when it finished with this ``key``; None when it must (re)run (also a
    multi-task or LightGBM cell without the ``served`` evaluation it should have)."""
    path = cell_dir(workdir, cell) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        record = CellRecord.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: train it again
    if not record.served and served and not cell.is_baseline:
        return None
    return record if record.key == key and record.cell == cell else None
