"""End to end on the real KuaiRand sample: ETL -> Trainer with TrackedRun callbacks (real apt
diagnostics) -> ONNX export -> registered version -> gate; everything read back from MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import onnxruntime as ort
import pytest
import torch
from mlflow import MlflowClient

from aptrank.data.etl.config import load_config as load_etl_config
from aptrank.data.etl.run import run_etl
from aptrank.data.spec import INPUT_NAMES, FeatureSpec
from aptrank.models.export import export_onnx
from aptrank.models.registry import build_model
from aptrank.pipeline.config import build_config
from aptrank.pipeline.gate import run_gate
from aptrank.pipeline.mlflow_store import ENV_URI
from aptrank.pipeline.provenance import fingerprint
from aptrank.pipeline.registry import CHAMPION, download_model, register_version, version_key
from aptrank.pipeline.tracking import TrackedRun
from aptrank.pipeline.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 6
EPOCHS = 2
APT_EVERY = 2


@pytest.mark.slow
def test_real_training_tracked_registered_and_gated(
    kuairand_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_URI, raising=False)
    features = tmp_path / "features"
    assert run_etl("kuairand", kuairand_dir, features, load_etl_config(ROOT / "configs/etl/kuairand.yaml")).passed
    cfg = build_config(
        {
            "name": "e2e",
            "seed": 1,
            "model": {"arch": "mmoe", "embedding_dim": 4, "expert_hidden": [8], "num_experts": 2, "tower_hidden": [4]},
            "train": {"epochs": EPOCHS, "batch_size": 512, "max_steps_per_epoch": STEPS_PER_EPOCH},
            "mtl": {"method": "pcgrad", "optimizer": "adatask", "diagnostics_every": APT_EVERY},
        }
    )
    with TrackedRun(cfg, tmp_path / "work", features_dir=features, data_window="2022-04-25..2022-04-30") as run:
        result = Trainer(cfg, features, tmp_path / "run", callbacks=run.callbacks(), progress=False).fit()
        artifacts = run.log_result(result)
        spec = FeatureSpec.read(features)
        model = build_model(cfg.arch, spec, {"seed": cfg.seed, **cfg.model_options})
        model.load_state_dict(torch.load(tmp_path / "run" / "best_model.pt", weights_only=True))
        onnx_file = export_onnx(model, tmp_path / "model.onnx", spec)
        key = version_key(cfg, fingerprint(features))
        reg = register_version(
            run.client,
            "e2e",
            run.run_id,
            onnx_file,
            key=key,
            evaluation=result.evaluation,
            window=fingerprint(features, ("test",)),
        )
    client = MlflowClient(run.uri)
    mlrun = client.get_run(run.run_id)

    tasks = result.evaluation["tasks"]
    assert {
        f"plots/{p}" for p in ("learning_curves.png", "grad_cosine.png", "rau_histogram.png", "instant_share.png")
    } <= set(artifacts)
    cos = client.get_metric_history(run.run_id, f"diag/grad_cos/{tasks[0]}_{tasks[1]}")
    assert sorted(m.step for m in cos) == list(range(0, EPOCHS * STEPS_PER_EPOCH, APT_EVERY))  # apt counts from 0
    assert all(-1.0 <= m.value <= 1.0 for m in cos)
    for task in tasks:
        assert [m.step for m in client.get_metric_history(run.run_id, f"Epoch/valid/{task}/auc")] == list(range(EPOCHS))
        assert mlrun.data.metrics[f"final/test/{task}/auc"] == result.evaluation["test"]["tasks"][task]["auc"]
    assert mlrun.data.params["feature_spec.hash"] == result.evaluation["spec_hash"]

    decision = run_gate(client, "e2e", str(reg.version.version), tolerance=cfg.gate.auc_tolerance)
    assert decision.promoted and decision.challenger_auc == {
        t: result.evaluation["test"]["tasks"][t]["auc"] for t in tasks
    }
    again = register_version(
        client, "e2e", run.run_id, onnx_file, key=key, evaluation=result.evaluation, window="ignored: the key matches"
    )
    assert not again.created and str(again.version.version) == str(reg.version.version)

    served = mlflow.pyfunc.load_model(str(download_model(client, "e2e", CHAMPION, tmp_path / "dl")))
    assert [i.name for i in served.metadata.get_input_schema().inputs] == list(INPUT_NAMES)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    batch = {
        i.name: rng.integers(0, 2, (4, *i.shape[1:])).astype(np.int64)
        if "int64" in i.type
        else rng.normal(size=(4, *i.shape[1:])).astype(np.float32)
        for i in session.get_inputs()
    }
    np.testing.assert_array_equal(served.predict(batch)["probabilities"], session.run(None, batch)[0])
