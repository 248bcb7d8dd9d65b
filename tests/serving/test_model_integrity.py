"""Issue #20: model files are trusted only when they are what was exported. NaN weights are refused
at every entry (model load, hot swap, registration; export: tests/serving/test_export.py), a digest
mismatch is refused (local sidecar and registry tag), and a crafted checkpoint runs no code under
``export`` or ``train --resume``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from aptrank.pipeline.cli import app
from aptrank.serving.errors import ModelLoadError
from aptrank.serving.holder import ModelHolder
from aptrank.serving.model_integrity import content_digest, non_finite_initializers, sidecar
from aptrank.serving.model_source import ModelSource
from aptrank.serving.onnx_model import load_onnx
from tests.serving.model_files import copy_model, signed
from tests.tiny import CLI

ROOT = Path(__file__).resolve().parents[2]


def rewrite_weight(src: Path, dst: Path, value: float) -> str:
    """Copy ``src`` to ``dst`` with the first element of its largest float initializer set to ``value``."""
    model = onnx.load(str(src))
    init = max(
        (t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.float32),
        key=lambda t: numpy_helper.to_array(t).size,
    )
    array = numpy_helper.to_array(init).copy()
    array.flat[0] = value
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(dst))
    return init.name


def test_export_writes_the_digest_the_loader_checks(model_path: Path) -> None:
    assert sidecar(model_path).read_text().strip() == content_digest(model_path)
    assert non_finite_initializers(model_path) == []
    load_onnx(model_path)


def test_tampered_weights_are_refused_by_the_sidecar_digest(model_path: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "model.onnx"
    rewrite_weight(model_path, tampered, 0.123)
    shutil.copyfile(sidecar(model_path), sidecar(tampered))
    with pytest.raises(ModelLoadError, match=r"model\.onnx: refused: SHA-256 .* does not match .*model\.onnx\.sha256"):
        load_onnx(tampered)


def test_nan_weights_are_refused_at_load(model_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "nan.onnx"
    name = rewrite_weight(model_path, bad, float("nan"))
    signed(bad)  # a digest that matches: refused for the weights alone
    assert non_finite_initializers(bad) == [name]
    expected = rf"nan\.onnx: refused: non-finite \(NaN/Inf\) weights in initializer\(s\) {name}"
    with pytest.raises(ModelLoadError, match=expected):
        load_onnx(bad)


def test_hot_swap_to_an_inf_model_is_refused_and_the_old_one_keeps_serving(
    model_path: Path, etl_dir: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live.onnx"
    copy_model(model_path, live)
    holder = ModelHolder(ModelSource(str(live)), features_dir=etl_dir)
    assert holder.refresh()
    before = holder.scorer.version
    rewrite_weight(model_path, tmp_path / "inf.onnx", float("inf"))
    os.replace(signed(tmp_path / "inf.onnx"), live)  # its own digest: refused for the weights alone
    os.replace(sidecar(tmp_path / "inf.onnx"), sidecar(live))
    os.utime(live, ns=(1, 1))  # a new poll key even within the file system's mtime resolution
    assert holder.refresh() is False
    assert holder.scorer.version == before and holder.metrics.value("model_swap_failures_total") == 1


def test_registration_refuses_nan_weights(registry: Any, model_path: Path, tmp_path: Path) -> None:
    from aptrank.pipeline.mlflow_store import ensure_experiment
    from aptrank.pipeline.registry import RegistryError, log_model_file

    client = registry.client()
    run_id = client.create_run(ensure_experiment(client, "integrity", (registry.workdir / "i").as_uri())).info.run_id
    bad = tmp_path / "nan.onnx"
    rewrite_weight(model_path, bad, float("nan"))
    with pytest.raises(RegistryError, match=rf"registering run {run_id}: .*nan\.onnx: refused: non-finite"):
        log_model_file(client, run_id, bad)
    assert client.list_artifacts(run_id) == []


def test_registry_digest_mismatch_is_refused(
    registry: Any, model_path: Path, run_dir: Path, etl_dir: Path, tmp_path: Path
) -> None:
    from aptrank.serving.model_integrity import TAG_SHA256

    version = registry.register("integrity", model_path, run_dir, etl_dir, alias="live")
    client = registry.client()
    source = ModelSource("models:/integrity@live", registry.uri)
    fetched = source.fetch(tmp_path / "ok")  # untouched: accepted
    assert client.get_model_version("integrity", version).tags[TAG_SHA256] == content_digest(fetched.path)
    stored = Path(client.get_model_version_download_uri("integrity", version).removeprefix("file://"))
    weights = max((p for p in stored.rglob("*") if p.is_file() and p.suffix in (".data", ".onnx")), key=os.path.getsize)
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match=rf"refused: SHA-256 .* recorded in 'integrity' version {version} tag"):
        source.fetch(tmp_path / "tampered")


def crafted_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``run_dir`` whose ``last.pt`` runs ``touch <marker>`` when unpickled unsafely."""
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return os.system, (f"touch {marker}",)

    crafted = tmp_path / "run"
    shutil.copytree(run_dir, crafted)
    torch.save({"config": Payload(), "epoch": 0}, crafted / "last.pt")
    return crafted, marker


def test_crafted_checkpoint_is_refused_by_export(run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    crafted, marker = crafted_run(run_dir, tmp_path)
    out = tmp_path / "x.onnx"
    args = ["export", "--run-id", str(crafted), "--out", str(out), "--features", str(etl_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{crafted / 'last.pt'}: refused: not a plain-data checkpoint" in result.output
    assert not marker.exists() and not out.exists()


def test_crafted_checkpoint_is_refused_by_train_resume(run_dir: Path, etl_dir: Path, tmp_path: Path) -> None:
    crafted, marker = crafted_run(run_dir, tmp_path)
    args = ["train", "--features", str(etl_dir), "--run-dir", str(crafted), "--resume", "--no-track", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--set", "model.arch=mmoe", "--set", "train.threads=1"])
    assert result.exit_code == 2, result.output
    assert "last.pt: refused: not a plain-data checkpoint" in result.output and not marker.exists()


def score_args(model: Path, etl_dir: Path, kuairand_dir: Path, out: Path) -> list[str]:
    files = ["--model", str(model), "--features", str(etl_dir), "--input", str(kuairand_dir), "--output", str(out)]
    return ["score", "--no-progress", "--source", "kuairand", *files]


def test_a_model_without_its_digest_is_refused_unless_the_user_opts_out(
    model_path: Path, etl_dir: Path, kuairand_dir: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(model_path, bare)  # e.g. brought from elsewhere: no bare.onnx.sha256
    refused = CliRunner().invoke(app, score_args(bare, etl_dir, kuairand_dir, tmp_path / "a.parquet"))
    assert refused.exit_code == 2 and not (tmp_path / "a.parquet").exists()
    assert refused.output.strip().splitlines() == [
        f"error: {bare}: refused: no SHA-256 recorded for it (no bare.onnx.sha256 beside it, no registry tag); "
        "re-export it with `aptrank export`, or pass --allow-unverified-model to load it unchecked"
    ]
    opted = CliRunner().invoke(
        app, [*score_args(bare, etl_dir, kuairand_dir, tmp_path / "b.parquet"), "--allow-unverified-model"]
    )
    assert opted.exit_code == 0, opted.output
    assert json.loads(opted.stdout.strip().splitlines()[-1])["scored_rows"] > 0
    tampered = tmp_path / "tampered.onnx"
    rewrite_weight(model_path, tampered, 0.5)
    shutil.copyfile(sidecar(model_path), sidecar(tampered))
    args = [*score_args(tampered, etl_dir, kuairand_dir, tmp_path / "c.parquet"), "--allow-unverified-model"]
    mismatch = CliRunner().invoke(app, args)  # the opt-out covers a missing digest, never a wrong one
    assert mismatch.exit_code == 2 and "refused: SHA-256" in mismatch.output


def test_serve_refuses_a_model_without_its_digest_at_start(model_path: Path, etl_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(model_path, bare)
    args = [*CLI, "serve", "--model", str(bare), "--features", str(etl_dir), "--port", "0", "--workers", "1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1 and "no SHA-256 recorded for it" in lines[0] and "--allow-unverified-model" in lines[0]


def test_the_registered_scorer_model_carries_its_digest_and_pyfunc_verifies_it(scorer_model, tmp_path: Path) -> None:
    import mlflow.pyfunc

    folder = scorer_model.save(tmp_path / "scorer")
    onnx_file = folder / "artifacts" / "model.onnx"
    assert sidecar(onnx_file).read_text().strip() == content_digest(onnx_file)
    mlflow.pyfunc.load_model(str(folder))  # untouched: loads
    rewrite_weight(onnx_file, onnx_file, 0.25)
    with pytest.raises(ModelLoadError, match=r"model\.onnx: refused: SHA-256 .* does not match"):
        mlflow.pyfunc.load_model(str(folder))
    sidecar(onnx_file).unlink()
    with pytest.raises(ModelLoadError, match=r"model\.onnx: refused: no SHA-256 recorded for it"):
        mlflow.pyfunc.load_model(str(folder))
