"""A tiny grid end to end: a generated log through the real ETL, 2 methods x AdaTask x APT off/on x 2
seeds + single-task baselines, real training. Checked: the MLflow parent and child runs (read back
with MlflowClient), the Markdown table against mean ± std / Δm% / best / 2-SE marks recomputed from
the trainer's per-run ``evaluation.json`` files, the plots, the docs copy, and resume (finished
cells are skipped; removed ones retrain, in spawned workers, to the same numbers)."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from mlflow import MlflowClient

from aptrank.pipeline.experiment import grid_from_dict, run_grid
from aptrank.pipeline.experiment.cells import Cell, baseline_cell, cell_config
from aptrank.pipeline.experiment.mlflow_runs import ERROR_TAG, PARENT_TAG, log_child
from aptrank.pipeline.experiment.report import merge_section
from aptrank.pipeline.experiment.store import RESULT_FILE, cell_dir
from aptrank.pipeline.experiment.worker import CellJob, CellOutput
from aptrank.pipeline.mlflow_store import ENV_URI

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("click", "like", "finish")
SEEDS = (0, 1)
METHODS = ("ew", "pcgrad")
GRID = {
    "name": "tiny",
    "seeds": list(SEEDS),
    "archs": ["mmoe"],
    "methods": list(METHODS),
    "optimizers": ["adatask"],
    "apt": [False, True],
    "delta_m_metrics": ["auc"],
    "datasets": {
        "syn": {
            "generator": {"users": 300, "items": 200, "events": 6000, "days": 5, "seed": 3, "task_correlation": -0.5},
            "etl_config": str(ROOT / "configs" / "etl" / "synthetic.yaml"),
        }
    },
    "job": {
        "model": {
            "embedding_dim": 4,
            "expert_hidden": [8],
            "num_experts": 2,
            "tower_hidden": [4],
            "bottom_hidden": [8],
        },
        "train": {"epochs": 1, "batch_size": 256, "max_steps_per_epoch": 4, "threads": 1},
        "mtl": {"lr": 0.002, "diagnostics_every": 1},
    },
}
ROWS = [(m, apt) for m in METHODS for apt in (False, True)]
N_CELLS = len(TASKS) * len(SEEDS) + len(ROWS) * len(SEEDS)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_URI, raising=False)
        outcome = run_grid(
            grid_from_dict(GRID, "tiny.yaml"),
            root / "work",
            command="aptrank experiment tiny",
            workers=1,
            docs=root / "docs",
            log=lambda _m: None,
        )
    return {"root": root, "work": (root / "work").resolve(), "outcome": outcome}


def evaluation(work: Path, cell: Cell) -> dict[str, Any]:
    return json.loads((cell_dir(work, cell) / "evaluation.json").read_text())["test"]["tasks"]


def cell_of(method: str, apt: bool, seed: int) -> Cell:
    return Cell("syn", "mmoe", method, "adatask", apt, seed)


def expected(work: Path) -> dict[tuple[str, bool], dict[str, list[float]]]:
    """(method, APT) -> column -> per-seed values, straight from the trainer's evaluation.json files."""
    base = {t: statistics.fmean(evaluation(work, baseline_cell("syn", t, s))[t]["auc"] for s in SEEDS) for t in TASKS}
    out: dict[tuple[str, bool], dict[str, list[float]]] = {}
    for method, apt in ROWS:
        runs = [evaluation(work, cell_of(method, apt, s)) for s in SEEDS]
        cols = {f"{t} {m.upper()}": [r[t][m] for r in runs] for m in ("auc", "gauc") for t in TASKS}
        cols["Δm%"] = [statistics.fmean((r[t]["auc"] - base[t]) / base[t] * 100 for t in TASKS) for r in runs]
        out[(method, apt)] = cols
    return out


def table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    lines = markdown.split("## Dataset `syn`")[1].strip().split("\n\n")[0].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return header, rows


def test_mlflow_parent_and_child_runs(grid: dict[str, Any]) -> None:
    work, outcome = grid["work"], grid["outcome"]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    parent_id = outcome.report.mlflow["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["aptrank.grid"] == "tiny"
    artifacts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "plots")
    }
    assert {
        "results.md",
        "results.json",
        "grid.json",
        "plots/instant_share.png",
        "plots/task_dominance.png",
        "plots/apt_effect.png",
    } <= artifacts
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert len(children) == N_CELLS and all(c.info.status == "FINISHED" for c in children)
    by_name = {c.info.run_name: c for c in children}
    for method, apt in ROWS:
        for s in SEEDS:
            cell = cell_of(method, apt, s)
            run = by_name[cell.id]
            assert run.data.tags["aptrank.cell"] == cell.id and run.data.params["mtl.method"] == method
            for t in TASKS:
                assert run.data.metrics[f"final/test/{t}/auc"] == evaluation(work, cell)[t]["auc"]
            share = client.get_metric_history(run.info.run_id, "diag/apt/instant_share")
            assert [m.step for m in share] == [0, 1, 2, 3] and share[0].value == pytest.approx(1.0)
    assert by_name["syn/single_task/like/seed1"].data.params["model.arch"] == "single_task"


def test_table_matches_per_run_json(grid: dict[str, Any]) -> None:
    work = grid["work"]
    header, rows = table_rows((work / "results.md").read_text())
    cols = [f"{t} {m}" for m in ("AUC", "GAUC") for t in TASKS] + ["Δm%"]
    assert header == ["arch", "method", "optimizer", "APT", *cols]
    assert [r[:4] for r in rows] == [["single-task", "–", "AdamW", "off"]] + [
        ["MMoE", {"ew": "EW", "pcgrad": "PCGrad"}[m], "AdaTask", "on" if a else "off"] for m, a in ROWS
    ]
    for k, t in enumerate(TASKS):  # baseline row: each task's own single-task models
        vals = [evaluation(work, baseline_cell("syn", t, s))[t]["auc"] for s in SEEDS]
        assert rows[0][4 + k].strip("*") == f"{statistics.fmean(vals):.4f} ± {statistics.stdev(vals):.4f}"
    exp = expected(work)
    for j, col in enumerate(cols):
        means = {key: statistics.fmean(v[col]) for key, v in exp.items()}
        top = max(means.values())
        for i, key in enumerate(ROWS):
            text = rows[1 + i][4 + j]
            vals = exp[key][col]
            digits, sign = (2, "+") if col == "Δm%" else (4, "")
            number = f"{statistics.fmean(vals):{sign}.{digits}f} ± {statistics.stdev(vals):.{digits}f}"
            assert text.replace("**", "").removesuffix(" ▲").removesuffix(" ▼") == number
            assert text.startswith("**") == math.isclose(means[key], top, rel_tol=1e-12), (col, key)
            ref = exp[("ew", key[1])][col]
            se = math.sqrt(statistics.variance(vals) / len(vals) + statistics.variance(ref) / len(ref))
            diff = statistics.fmean(vals) - statistics.fmean(ref)
            mark = "" if key[0] == "ew" or abs(diff) <= 2 * se else (" ▲" if diff > 0 else " ▼")
            assert text.endswith(mark) and (mark or not re.search("[▲▼]", text)), (col, key, text)
    data = json.loads((work / "results.json").read_text())["datasets"]["syn"]
    for i, key in enumerate(ROWS):
        assert data["rows"][i]["columns"]["click AUC"]["values"] == exp[key]["click AUC"]


def test_plots_and_docs(grid: dict[str, Any]) -> None:
    work, docs = grid["work"], grid["root"] / "docs"
    for name in ("instant_share.png", "task_dominance.png", "apt_effect.png"):
        image = matplotlib.image.imread(work / "results" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert (docs / "results" / "tiny" / name).read_bytes() == (work / "results" / name).read_bytes()
    markdown = (docs / "results.md").read_text()
    section = (work / "results.md").read_text().replace("](results/", "](results/tiny/")
    assert markdown == merge_section("", "tiny", section)
    assert (
        "Command: `aptrank experiment tiny`" in markdown
        and "![apt_effect.png](results/tiny/apt_effect.png)" in markdown
    )
    observations = json.loads((work / "results.json").read_text())["observations"]
    assert {(o["optimizer"], o["apt"]) for o in observations["instant_share"]} == {
        ("adatask", False),
        ("adatask", True),
    }


def test_resume_skips_finished_cells_and_retrains_removed_ones(
    grid: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_URI, raising=False)
    work, first = grid["work"], grid["outcome"]
    spec = grid_from_dict(GRID, "tiny.yaml")
    table = (work / "results.md").read_text().split("## Dataset")[1]
    again = run_grid(spec, work, command="again", workers=1, log=lambda _m: None)
    assert again.trained == [] and len(again.skipped) == N_CELLS
    assert again.report.mlflow["parent_run_id"] == first.report.mlflow["parent_run_id"]

    removed = [baseline_cell("syn", "like", 1), cell_of("pcgrad", True, 0)]
    before = {c.id: evaluation(work, c) for c in removed}
    for c in removed:
        (cell_dir(work, c) / RESULT_FILE).unlink()
    third = run_grid(spec, work, command="again", workers=2, log=lambda _m: None)  # spawned workers
    assert sorted(third.trained) == sorted(c.id for c in removed) and len(third.skipped) == N_CELLS - 2
    assert {c.id: evaluation(work, c) for c in removed} == before  # seeded: same numbers in a fresh process
    assert (work / "results.md").read_text().split("## Dataset")[1] == table
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    parent_id = first.report.mlflow["parent_run_id"]
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert len(children) == N_CELLS + 2


def test_a_diverged_cell_is_a_failed_child_run(grid: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_URI, raising=False)
    work = grid["work"]
    spec, cell = grid_from_dict(GRID, "tiny.yaml"), cell_of("ew", False, 0)
    job = CellJob(cell, cell_config(spec, cell), work / "datasets" / "syn" / "features", work / "unused", "key")
    error = "epoch 0 step 3: non-finite loss for task(s) ['like']"
    run_id = log_child(job, CellOutput(error=error), work, "some-parent", {"aptrank.grid": "tiny"})
    run = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FAILED" and run.info.run_name == cell.id
    assert run.data.tags[ERROR_TAG] == error and run.data.tags[PARENT_TAG] == "some-parent"
    assert not run.data.metrics  # nothing trained, nothing logged
