"""``run_grid``: build the datasets, train every cell not finished yet, log each as an MLflow child
run under the grid's parent run, then write the tables and plots (:mod:`aptrank.pipeline.experiment.report`).

Work dir layout: ``datasets/<name>/{raw,features,served}`` (and ``<etl key>/`` per ETL variant),
``cells/<cell id>/`` (checkpoints, the trainer's ``evaluation.json``, the cell's ``result.json``),
``mlflow.db`` + ``mlartifacts/`` (the default store), ``parent_run.json``, ``results.md``, ``results.json``,
``results/*.png``, ``locks/`` (one grid run per work dir at a time, :class:`aptrank.pipeline.lock.JobLock`).

Resume: a cell whose ``result.json`` holds its current key (config hash + data fingerprint) is
skipped; progress lines on ``log`` name each cell and the ETA (elapsed / cells done × cells left).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aptrank.pipeline.experiment.cells import Cell, cell_config, grid_cells
from aptrank.pipeline.experiment.datasets import PreparedDataset, generate_dataset, prepare_dataset
from aptrank.pipeline.experiment.grid import GridSpec
from aptrank.pipeline.experiment.mlflow_runs import ParentRun, log_child
from aptrank.pipeline.experiment.report import GridReport, copy_to_docs, write_report
from aptrank.pipeline.experiment.store import CellRecord, cell_dir, kept_series, read_record, write_record
from aptrank.pipeline.experiment.variants import etl_key
from aptrank.pipeline.experiment.worker import CellJob, CellOutput, execute
from aptrank.pipeline.lock import JobLock
from aptrank.pipeline.provenance import canonical_hash
from aptrank.pipeline.registry import version_key
from aptrank.pipeline.tracking import as_number

DATASETS_DIR = "datasets"


@dataclass
class GridOutcome:
    report: GridReport
    outputs: list[Path]
    trained: list[str] = field(default_factory=list)  # cell ids trained by this invocation
    skipped: list[str] = field(default_factory=list)  # cell ids reused from an earlier one

    @property
    def ok(self) -> bool:
        return not self.report.failed


def run_grid(
    spec: GridSpec,
    workdir: str | Path,
    *,
    command: str,
    workers: int | None = None,
    docs: Path | None = None,
    log: Callable[[str], None] = print,
) -> GridOutcome:
    """Run (or resume) the grid in ``workdir``; ``workers`` overrides the grid's ``workers``."""
    t0 = time.perf_counter()
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n_workers = workers or spec.workers
    with JobLock(work, spec.name):
        data = prepare_tables(spec, work / DATASETS_DIR, log)
        tasks = {t: p.tasks for t, p in data.items()}
        jobs = [_job(spec, work, data[c.table], c) for c in grid_cells(spec, tasks)]
        done = {
            j.cell.id: rec for j in jobs if (rec := read_record(work, j.cell, j.key, j.served is not None)) is not None
        }
        pending = [j for j in jobs if j.cell.id not in done]
        skipped = [j.cell.id for j in jobs if j.cell.id in done]
        log(
            f"[experiment] grid '{spec.name}': {len(jobs)} cells, {len(done)} finished earlier (skipped), "
            f"{len(pending)} to train with {n_workers} worker(s)"
        )
        tags = {
            "aptrank.grid": spec.name,
            "aptrank.grid.file": spec.source,
            "aptrank.grid.hash": canonical_hash(spec.to_dict()),
        }
        failed: dict[str, str] = {}
        with ParentRun(jobs[0].cfg, work, spec.name, tags) as parent:  # every cell has the grid's tracking
            parent.log_grid(spec.to_dict())
            t_cells = time.perf_counter()
            for i, (job, output) in enumerate(execute(pending, n_workers), start=1):
                tags_child = {"aptrank.grid": spec.name, "aptrank.dataset": job.cell.dataset}
                run_id = log_child(job, output, work, parent.run_id, tags_child)
                if output.error is None:
                    done[job.cell.id] = _record(work, job, output, run_id)
                else:
                    failed[job.cell.id] = output.error
                log(_progress(i, len(pending), job.cell, output, time.perf_counter() - t_cells))
            records = [done[j.cell.id] for j in jobs if j.cell.id in done]
            report = GridReport(
                spec,
                command,
                {
                    "wall_s": time.perf_counter() - t0,
                    "cells": len(jobs),
                    "cells_trained": len(pending) - len(failed),
                    "cells_reused": len(skipped),
                    "cell_seconds_total": sum(r.seconds for r in records),
                    "workers": n_workers,
                },
                tasks,
                records,
                failed,
                {"parent_run_id": parent.run_id, "tracking_uri": parent.uri},
            )
            outputs = write_report(report, work)
            parent.log_outputs([p for p in outputs if p.suffix != ".png"])
            parent.log_outputs([p for p in outputs if p.suffix == ".png"], "plots")
        if docs is not None:
            outputs += copy_to_docs(work, docs, spec.name)
    log(
        f"[experiment] done in {time.perf_counter() - t0:.0f} s: {work / 'results.md'}"
        + (f"; {len(failed)} cell(s) failed" if failed else "")
    )
    return GridOutcome(report, outputs, [j.cell.id for j in pending if j.cell.id not in failed], skipped)


def prepare_tables(spec: GridSpec, root: Path, log: Callable[[str], None]) -> dict[str, PreparedDataset]:
    """Table name (:attr:`Cell.table`) -> its prepared dataset: each dataset generated once, its ETL
    run once per distinct ETL variant (:func:`etl_key`) and shared by the variants that have it."""
    out: dict[str, PreparedDataset] = {}
    for name, decl in spec.datasets.items():
        raw = generate_dataset(name, decl, root, log)
        by_etl: dict[str, PreparedDataset] = {}
        for v in spec.variant_names:
            variant = spec.variants[v] if v is not None else None
            key = etl_key(variant)
            if key not in by_etl:
                by_etl[key] = prepare_dataset(name, decl, root, log, variant, raw)
            out[Cell(name, "", "", "", False, 0, None, v).table] = by_etl[key]
    return out


def _job(spec: GridSpec, work: Path, data: PreparedDataset, cell: Cell) -> CellJob:
    cfg = cell_config(spec, cell, data.data)
    if cell.is_lightgbm:
        key = canonical_hash(
            {"lightgbm": spec.lightgbm_params.to_dict(), "seed": cell.seed, "inputs": data.fingerprint}
        )
        params = spec.lightgbm_params
    else:
        key, params = version_key(cfg, data.fingerprint), None
    return CellJob(cell, cfg, data.features, cell_dir(work, cell), key, data.served, params)


def _metrics(tasks: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    return {t: {m: as_number(v) for m, v in ms.items()} for t, ms in tasks.items()}


def _record(work: Path, job: CellJob, output: CellOutput, run_id: str) -> CellRecord:
    test = _metrics(output.evaluation["test"]["tasks"])
    served = _metrics(output.served.get("tasks", {}))
    record = CellRecord(
        job.cell, job.key, run_id, test, output.best_epoch, output.seconds, kept_series(output.diagnostics), served
    )
    write_record(work, record)
    return record


def _progress(i: int, n: int, cell: Cell, output: CellOutput, elapsed: float) -> str:
    eta = elapsed / i * (n - i)
    if output.error is not None:
        what = f"FAILED ({output.error.splitlines()[0][:120]})"
    else:
        aucs = [a for m in output.evaluation["test"]["tasks"].values() if (a := as_number(m.get("auc"))) is not None]
        what = f"{output.seconds:.1f} s, mean test AUC {sum(aucs) / max(len(aucs), 1):.4f}"
        if output.served:
            what += f" (served {output.served['mean_auc']:.4f})"
    return f"[experiment] {i}/{n} {cell.id}: {what}; ETA {_clock(eta)}"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
