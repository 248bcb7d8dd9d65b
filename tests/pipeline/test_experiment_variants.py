"""A tiny grid with the ``variants`` axis, an explicit configuration list and LightGBM rows, end to
end on a generated log through the real ETL: each distinct ETL override gets its own derived config
and ETL output (computed once, shared by variants with the same ETL overrides), job overrides reach
the trained cells, and every multi-task and LightGBM cell of a date-split variant carries the served
evaluation, equal to the job's own served evaluation of the cell's exported model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from aptrank.pipeline.experiment import grid_from_dict, run_grid
from aptrank.pipeline.experiment.report import RESULTS_JSON, RESULTS_MD
from aptrank.pipeline.experiment.store import RESULT_FILE, CellRecord
from aptrank.pipeline.experiment.variants import etl_key

ROOT = Path(__file__).resolve().parents[2]
DATES = {"splits": {"valid_start": "2022-04-11", "test_start": "2022-04-12"}}  # the log: Apr 8-12
GRID = {
    "name": "variants",
    "seeds": [0],
    "archs": ["mmoe"],
    "configurations": [{"method": "ew", "optimizer": "adamw", "apt": True}],
    "baselines": False,
    "lightgbm": True,
    "lightgbm_params": {"num_rounds": 100, "early_stopping_rounds": 10, "min_data_in_leaf": 20, "num_leaves": 15},
    "variants": {
        "dated": {"etl": DATES},
        "dated-wide": {"etl": DATES, "job": {"model": {"embedding_dim": 6}}},  # shares dated's ETL output
        "smooth": {"etl": {"features": {"smoothing": 5.0}}},  # fraction splits: no served evaluation
    },
    "datasets": {
        "syn": {
            "generator": {"users": 300, "items": 200, "events": 6000, "days": 5, "seed": 3, "task_correlation": 0.5},
            "etl_config": str(ROOT / "configs" / "etl" / "synthetic.yaml"),
        }
    },
    "job": {
        "model": {"embedding_dim": 4, "expert_hidden": [8], "num_experts": 2, "tower_hidden": [4]},
        "train": {"epochs": 1, "batch_size": 256, "max_steps_per_epoch": 4, "threads": 1},
        "mtl": {"lr": 0.002, "diagnostics_every": 0},
    },
}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("variants")
    spec = grid_from_dict(GRID, "variants.yaml")
    outcome = run_grid(spec, work, command="test", log=lambda _: None)
    records = {
        p.parent.relative_to(work / "cells").as_posix(): CellRecord.from_dict(json.loads(p.read_text()))
        for p in (work / "cells").rglob(RESULT_FILE)
    }
    return {"spec": spec, "work": work, "outcome": outcome, "records": records}


def test_each_distinct_etl_override_has_one_derived_config_and_output(grid: dict[str, Any]) -> None:
    spec, datasets = grid["spec"], grid["work"] / "datasets" / "syn"
    dated, smooth = etl_key(spec.variants["dated"]), etl_key(spec.variants["smooth"])
    assert etl_key(spec.variants["dated-wide"]) == dated != smooth
    assert sorted(p.name for p in datasets.iterdir()) == sorted(["raw", dated, smooth])
    assert yaml.safe_load((datasets / dated / "etl_config.yaml").read_text())["splits"]["test_start"] == "2022-04-12"
    smooth_cfg = yaml.safe_load((datasets / smooth / "etl_config.yaml").read_text())
    assert smooth_cfg["features"]["smoothing"] == 5.0 and smooth_cfg["features"]["windows"] == ["1d", "7d", "all"]
    # the override changed the features: the dense rate priors' smoothing is in the FeatureSpec
    spec_dated = json.loads((datasets / dated / "features" / "feature_spec.json").read_text())
    spec_smooth = json.loads((datasets / smooth / "features" / "feature_spec.json").read_text())
    assert spec_dated["hash"] != spec_smooth["hash"]
    assert (datasets / dated / "served" / "features" / "snapshot").is_dir()
    assert not (datasets / smooth / "served").exists()


def test_cells_per_variant_job_overrides_and_served_evaluation(grid: dict[str, Any], tmp_path: Path) -> None:
    records, outcome = grid["records"], grid["outcome"]
    assert outcome.ok and len(records) == 6
    assert sorted(records) == sorted(
        f"syn/{v}/{c}"
        for v in ("dated", "dated-wide", "smooth")
        for c in ("lightgbm/seed0", "mmoe/ew/adamw/apt-on/seed0")
    )
    client = MlflowClient(f"sqlite:///{grid['work'] / 'mlflow.db'}")
    config = {
        v: client.download_artifacts(
            records[f"syn/{v}/mmoe/ew/adamw/apt-on/seed0"].run_id, "config.yaml", str(tmp_path / v)
        )
        for v in ("dated", "dated-wide")
    }
    dims = {v: yaml.safe_load(Path(p).read_text())["model"]["embedding_dim"] for v, p in config.items()}
    assert dims == {"dated": 4, "dated-wide": 6}  # the variant's job override reached the trained cell
    for cell_id, record in records.items():
        assert set(record.test) == {"click", "like", "finish"}
        if cell_id.startswith("syn/smooth/"):
            assert record.served == {}
        else:
            assert set(record.served) == {"click", "like", "finish"}
            assert all(0.0 < m["auc"] < 1.0 for m in record.served.values())
            assert record.served != record.test  # frozen features: another evaluation
    lgbm = records["syn/dated/lightgbm/seed0"]
    assert lgbm.test["click"]["auc"] > 0.62 and lgbm.served["click"]["auc"] > 0.6


def test_served_figures_equal_the_jobs_served_evaluation(grid: dict[str, Any]) -> None:
    """The grid's cached snapshot gives what the job's served evaluation (its own ETL rerun) gives."""
    from aptrank.pipeline.experiment.cells import Cell, cell_config
    from aptrank.pipeline.scorer_model import model_fusion_weights
    from aptrank.pipeline.served_evaluation import evaluate_served

    work, spec = grid["work"], grid["spec"]
    cell = Cell("syn", "mmoe", "ew", "adamw", True, 0, None, "dated")
    run_dir = work / "cells" / cell.id
    key = etl_key(spec.variants["dated"])
    data = {
        "source": "canonical",
        "input": str(work / "datasets" / "syn" / "raw"),
        "etl_config": str(work / "datasets" / "syn" / key / "etl_config.yaml"),
    }
    from aptrank.pipeline.config import DataConfig

    cfg = cell_config(spec, cell, DataConfig(**data))
    onnx = run_dir / "model.onnx"
    served = evaluate_served(cfg, work / "datasets" / "syn" / key / "features", onnx, model_fusion_weights(cfg, onnx))
    for task, m in grid["records"][cell.id].served.items():
        assert m["auc"] == pytest.approx(served["tasks"][task]["auc"], abs=1e-12)
        assert m["gauc"] == pytest.approx(served["tasks"][task]["gauc"], abs=1e-12)


def test_report_has_variant_tables_lightgbm_rows_and_the_comparison(grid: dict[str, Any]) -> None:
    work = grid["work"]
    md = (work / RESULTS_MD).read_text()
    for table in ("syn/dated", "syn/dated-wide", "syn/smooth"):
        assert f"## Dataset `{table}`" in md
    assert md.count("| LightGBM | – | – | off |") == 3
    assert "click AUC served" in md
    assert "## Served test AUC against LightGBM (same table)" in md
    data = json.loads((work / RESULTS_JSON).read_text())
    comparison = data["served_comparison"][0]["tables"]
    assert sorted(comparison) == ["syn/dated", "syn/dated-wide"]  # syn/smooth has no served figures
    row = comparison["syn/dated"][0]
    record, lgbm = grid["records"]["syn/dated/mmoe/ew/adamw/apt-on/seed0"], grid["records"]["syn/dated/lightgbm/seed0"]
    for task, v in row["tasks"].items():
        assert v["delta"] == pytest.approx(record.served[task]["auc"] - lgbm.served[task]["auc"], abs=1e-12)
        assert v["mark"] == 0  # one seed: no standard error, no mark
    assert row["beats"] is False


def test_valid_ranking_script_orders_rows_by_the_runs_validation_auc(grid: dict[str, Any]) -> None:
    """scripts/grid_valid_ranking.py (how a search picks its winner) in a real process: one line per
    row, multi-task rows by their MLflow ``final/valid/mean_auc`` (highest first), LightGBM (no
    validation figures) last; a folder without a grid run is refused with exit code 2."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts" / "grid_valid_ranking.py")]
    out = subprocess.run([*script, str(grid["work"])], capture_output=True, text=True, env=env, check=True).stdout
    lines = [line.split(" | ") for line in out.splitlines() if line.startswith("| syn/")]
    client = MlflowClient(f"sqlite:///{grid['work'] / 'mlflow.db'}")
    records = grid["records"]
    valid = {
        v: client.get_run(records[f"syn/{v}/mmoe/ew/adamw/apt-on/seed0"].run_id).data.metrics["final/valid/mean_auc"]
        for v in ("dated", "dated-wide", "smooth")
    }
    expected = [f"syn/{v}/mmoe/ew/adamw/apt-on" for v in sorted(valid, key=lambda v: -valid[v])]
    assert [cells[0].removeprefix("| ") for cells in lines[:3]] == expected
    for cells in lines[:3]:
        variant = cells[0].split("/")[1]
        assert cells[1] == "1" and float(cells[2].split(" ± ")[0]) == pytest.approx(valid[variant], abs=5e-5)
    lightgbm_rows = sorted(f"| syn/{v}/lightgbm" for v in ("dated", "dated-wide", "smooth"))
    assert sorted(cells[0] for cells in lines[3:]) == lightgbm_rows
    assert all(cells[2] == "–" for cells in lines[3:])
    bad = subprocess.run([*script, str(grid["work"] / "cells")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "parent_run.json" in bad.stderr


def test_valid_ranking_counts_a_retrained_cell_once(grid: dict[str, Any], tmp_path: Path) -> None:
    """A cell trained again by a later invocation (after a code change) leaves two finished runs with
    the same cell tag: the ranking keeps the latest, so the seeds are not counted twice. Run on a
    copy of the grid's MLflow store."""
    import shutil
    import subprocess
    import sys

    from aptrank.pipeline.experiment.mlflow_runs import PARENT_FILE, PARENT_TAG

    shutil.copy(grid["work"] / "mlflow.db", tmp_path / "mlflow.db")
    parent = json.loads((grid["work"] / PARENT_FILE).read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / PARENT_FILE).write_text(json.dumps({**parent, "tracking_uri": uri}))
    client = MlflowClient(uri)
    first = client.get_run(grid["records"]["syn/smooth/mmoe/ew/adamw/apt-on/seed0"].run_id)
    again = client.create_run(
        first.info.experiment_id,
        tags={PARENT_TAG: parent["run_id"], "aptrank.cell": first.data.tags["aptrank.cell"]},
        start_time=first.info.start_time + 1,
    )
    for key, value in first.data.metrics.items():
        client.log_metric(again.info.run_id, key, value if key != "final/valid/mean_auc" else 0.25)
    client.set_terminated(again.info.run_id, "FINISHED")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts" / "grid_valid_ranking.py"), str(tmp_path)]
    out = subprocess.run(script, capture_output=True, text=True, env=env, check=True).stdout
    (row,) = [line.split(" | ") for line in out.splitlines() if line.startswith("| syn/smooth/mmoe/")]
    assert row[1] == "1" and row[2] == "0.2500 ± –"


def test_valid_ranking_pools_the_seeds_of_several_workdirs(grid: dict[str, Any]) -> None:
    """Two work dirs (here the same grid twice, as a second grid of the same rows with other seeds
    would be) pool their runs: every row counts the seeds of both, its mean is theirs."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts" / "grid_valid_ranking.py")]
    one = subprocess.run([*script, str(grid["work"])], capture_output=True, text=True, env=env, check=True).stdout
    both = subprocess.run(
        [*script, str(grid["work"]), str(grid["work"])], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = {line.split(" | ")[0]: line.split(" | ") for line in one.splitlines() if line.startswith("| syn/")}
    pooled = {line.split(" | ")[0]: line.split(" | ") for line in both.splitlines() if line.startswith("| syn/")}
    assert pooled.keys() == rows.keys()
    for row, cells in rows.items():
        assert int(pooled[row][1]) == 2 * int(cells[1])
        assert pooled[row][2].split(" ± ")[0] == cells[2].split(" ± ")[0]
    bad = subprocess.run([*script, str(grid["work"]), str(grid["work"] / "cells")], capture_output=True, env=env)
    assert bad.returncode == 2
