"""``aptrank export`` and its parity gate: every architecture passes on real rows; a broken model
(tampered export path, NaN weights) is refused with a non-zero exit and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from aptrank.data.spec import FeatureSpec
from aptrank.models.embedding import SpecEmbedding
from aptrank.models.export import PARITY_ROWS, ParityError, export_checked, parity_rows
from aptrank.models.export.parity import compare
from aptrank.models.registry import ARCHITECTURES, build_model
from aptrank.pipeline.cli import app
from aptrank.pipeline.mlflow_store import ensure_experiment
from aptrank.pipeline.runs import RunError, TrainedRun, build_trained_model
from aptrank.serving.onnx_model import load_onnx

SMALL = {
    "embedding_dim": 4,
    "bottom_hidden": [8],
    "expert_hidden": [8],
    "tower_hidden": [4],
    "num_experts": 2,
    "ple_levels": 1,
    "seed": 0,
}


def _folded_tables(graph: Any) -> list[str]:
    """The folded tables among a graph's initializers (``models.export.fold``; on the ETL's spec the
    first layer's user and other parts each have theirs: ``models.export.user_side``)."""
    return sorted(i.name for i in graph.initializer if i.name.startswith("fold.") and i.name.endswith(".folded"))


@pytest.fixture(scope="module")
def spec(etl_dir: Path) -> FeatureSpec:
    return FeatureSpec.read(etl_dir)


@pytest.fixture(scope="module")
def rows(etl_dir: Path, spec: FeatureSpec) -> dict:
    return parity_rows(etl_dir, spec, PARITY_ROWS)


def test_parity_rows_are_ten_thousand_real_test_rows(rows: dict) -> None:
    assert {k: v.shape[0] for k, v in rows.items()} == dict.fromkeys(rows, PARITY_ROWS)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_passes_the_gate(arch: str, spec: FeatureSpec, rows: dict, tmp_path: Path) -> None:
    model = build_model(arch, spec, SMALL).eval()
    result = export_checked(model, spec, tmp_path / f"{arch}.onnx", rows)
    assert result.parity.passed and result.parity.rows == PARITY_ROWS
    assert result.parity.max_abs_diff <= 1e-5
    assert load_onnx(result.path).task_names == tuple(model.task_names)


def test_tampered_export_path_is_refused(
    spec: FeatureSpec, rows: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ONNX graph is traced from ``forward_plain``; a fault there must not reach --out."""
    plain = SpecEmbedding.forward_plain
    monkeypatch.setattr(SpecEmbedding, "forward_plain", lambda self, *a, **k: plain(self, *a, **k) * 1.01)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(ParityError, match=r"max \|p_onnx - p_torch\| = .* > 1e-05"):
        export_checked(build_model("mmoe", spec, SMALL), spec, out, rows)
    assert out.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_compare_reports_per_task_differences() -> None:
    a = torch.tensor([[0.5, 0.25], [0.125, 1.0]]).numpy()
    b = a.copy()
    b[1, 1] = 0.75
    report = compare(a, b, ["click", "like"], 1e-5)
    assert report.per_task == {"click": 0.0, "like": 0.25}
    assert not report.passed


def test_cli_exports_a_trained_run(model_path: Path, spec: FeatureSpec) -> None:
    """``model_path`` is the CLI's output on a real 1-epoch training (conftest); its JSON summary
    is kept beside it."""
    summary = json.loads(model_path.with_suffix(".json").read_text())
    assert summary["parity"]["passed"] and summary["parity"]["rows"] == PARITY_ROWS
    assert summary["parity"]["max_abs_diff"] <= 1e-5 and summary["parity"]["non_finite"] == 0
    assert load_onnx(model_path).spec.hash == spec.hash == summary["spec_hash"]


def test_cli_exports_an_mlflow_run(registry: Any, run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    client = registry.client()
    run_id = client.create_run(ensure_experiment(client, "export-tests", (registry.workdir / "a").as_uri())).info.run_id
    config = torch.load(run_dir / "last.pt", weights_only=False)["config"]
    client.log_dict(run_id, config, "config.yaml")
    client.log_artifact(run_id, str(etl_dir / "feature_spec.json"))
    client.log_artifact(run_id, str(run_dir / "best_model.pt"), "checkpoint")
    out = tmp_path / "from_mlflow.onnx"
    result = CliRunner().invoke(
        app,
        ["export", "--run-id", run_id, "--tracking-uri", registry.uri, "--out", str(out), "--features", str(etl_dir)],
    )
    assert result.exit_code == 0, result.output
    assert load_onnx(out).spec.hash == FeatureSpec.read(etl_dir).hash


def test_cli_refuses_a_broken_run(run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    weights = torch.load(broken / "best_model.pt", weights_only=True)
    name = next(k for k in weights if k.startswith("towers.") and k.endswith("weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    torch.save(weights, broken / "best_model.pt")
    out = tmp_path / "broken.onnx"
    result = CliRunner().invoke(app, ["export", "--run-id", str(broken), "--out", str(out), "--features", str(etl_dir)])
    assert result.exit_code == 1
    assert "parity check failed on 10000 rows: 10000 non-finite probabilities" in result.output  # one task
    assert not out.exists()


def test_run_trained_on_another_spec_is_refused(run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    run = TrainedRun({}, {}, "0" * 64, None, "runs:/x")
    with pytest.raises(RunError, match="is not the one run runs:/x was trained on"):
        build_trained_model(run, etl_dir)
    result = CliRunner().invoke(
        app,
        ["export", "--run-id", str(tmp_path / "absent"), "--out", str(tmp_path / "m.onnx"), "--features", str(etl_dir)],
    )
    assert result.exit_code == 2
    assert "neither a run folder nor an MLflow run id" in result.output


def test_cli_fold_rows_chooses_the_graph_not_the_scores(
    model_path: Path, run_dir: Path, etl_dir: Path, rows: dict, tmp_path: Path
) -> None:
    """``model_path`` was exported with the default table folding; ``--fold-rows 0`` writes the
    unfolded graph, and both give the same probabilities on the parity rows."""
    import onnx

    from aptrank.models.export.fold import FOLD_MAX_ROWS

    out = tmp_path / "unfolded.onnx"
    args = ["export", "--run-id", str(run_dir), "--out", str(out), "--features", str(etl_dir), "--fold-rows", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folded_tables = {p: _folded_tables(onnx.load(str(p)).graph) for p in (model_path, out)}
    assert folded_tables[model_path] == ["fold.other.folded", "fold.user.folded"] and not folded_tables[out]
    folded, unfolded = load_onnx(model_path).predict(rows), load_onnx(out).predict(rows)
    assert abs(folded - unfolded).max() <= 2e-5
    help_text = CliRunner().invoke(app, ["export", "--help"], terminal_width=200).output
    assert f"FOLD_MAX_ROWS, {FOLD_MAX_ROWS}]" in help_text
    bad = CliRunner().invoke(app, [*args[:-1], "-1"])
    assert bad.exit_code == 2 and "--fold-rows" in bad.output


def test_the_job_exports_with_its_configured_folding(run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    """``scoring.fold_rows`` of the job config reaches the job's export step."""
    import onnx

    from aptrank.pipeline.job import export_step

    for fold, folded in ((0, False), (None, True)):
        run = tmp_path / f"run-{fold}"
        shutil.copytree(run_dir, run)
        graph = onnx.load(str(export_step(run, etl_dir, fold))).graph
        assert bool(_folded_tables(graph)) is folded
