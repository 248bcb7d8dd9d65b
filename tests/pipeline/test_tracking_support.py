"""Shared builders for the tracking, registry and remote-server tests (no tests here).

They make real objects: a JobConfig through the real loader, a FeatureSpec file, a TrainResult with
a real torch checkpoint and evaluation.json, and a real ONNX graph that onnxruntime runs
(``probabilities = sigmoid(dense @ W)``, the serving contract's inputs, unused ones included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polars as pl
import torch
from onnx import TensorProto, helper, numpy_helper

from aptrank.data.spec import CategoricalFeature, DenseFeature, FeatureSpec, TaskLabel
from aptrank.pipeline.config import JobConfig, build_config
from aptrank.pipeline.trainer import TrainResult

TASKS = ["click", "like", "long_view"]
N_DENSE = 2


def job_config(name: str, **sections: Any) -> JobConfig:
    """A validated JobConfig (tiny MMoE) named ``name``; ``sections`` override top-level keys."""
    raw: dict[str, Any] = {
        "name": name,
        "seed": 3,
        "model": {"arch": "mmoe", "embedding_dim": 4},
        "train": {"epochs": 3, "batch_size": 64},
        "tracking": {"experiment": "tests"},
    }
    raw.update(sections)
    return build_config(raw, f"<test {name}>")


def write_features(folder: Path) -> FeatureSpec:
    """A FeatureSpec for TASKS written to ``folder/feature_spec.json``, plus a Parquet file per split."""
    spec = FeatureSpec(
        tasks=tuple(TaskLabel(t, "binary_column", column=t) for t in TASKS),
        categorical=(CategoricalFeature("user_id", "user", 10), CategoricalFeature("item_id", "item", 20)),
        dense=tuple(DenseFeature(f"d{i}", mean=0.0, std=1.0) for i in range(N_DENSE)),
    )
    folder.mkdir(parents=True, exist_ok=True)
    spec.write(folder / "feature_spec.json")
    for split in ("train", "valid", "test"):
        (folder / split).mkdir(exist_ok=True)
        pl.DataFrame({"user_id": [1, 2], "split": [split, split]}).write_parquet(folder / split / "part-0.parquet")
    return spec


def split_metrics(aucs: dict[str, float], rows: int = 1000) -> dict[str, Any]:
    """A split block as ``pipeline.evaluate.evaluate_split`` returns it, with the given AUCs."""
    tasks = {
        t: {"auc": a, "gauc": a - 0.05, "logloss": 0.5 - a / 10, "calibration": 1.02, "label_rate": 0.1}
        for t, a in aucs.items()
    }
    return {"rows": rows, "tasks": tasks, "mean_auc": float(np.mean(list(aucs.values())))}


def history(epochs: int) -> list[dict[str, Any]]:
    """Epoch records shaped like ``Trainer.train_epoch`` + ``valid`` (numbers depend on epoch, task)."""
    out = []
    for e in range(epochs):
        losses = {t: 0.6 - 0.05 * e - 0.01 * k for k, t in enumerate(TASKS)}
        valid = split_metrics({t: 0.6 + 0.02 * e + 0.01 * k for k, t in enumerate(TASKS)})
        out.append(
            {
                "epoch": e,
                "steps": 10,
                "samples": 640,
                "seconds": 1.5,
                "samples_per_s": 426.0 + e,
                "data_wait_s": 0.1,
                "train_loss": losses,
                "valid": valid,
            }
        )
    return out


def train_result(run_dir: Path, test_aucs: dict[str, float], spec: FeatureSpec, epochs: int = 3) -> TrainResult:
    """A TrainResult whose run folder holds a real checkpoint and evaluation.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = history(epochs)
    test = split_metrics(test_aucs)
    test["popularity"] = {t: {"auc": 0.55, "gauc": 0.5, "logloss": 0.6, "calibration": float("nan")} for t in TASKS}
    evaluation = {
        "seed": 3,
        "arch": "mmoe",
        "tasks": list(TASKS),
        "spec_hash": spec.hash,
        "best_epoch": epochs - 1,
        "valid": hist[-1]["valid"],
        "test": test,
        "history": hist,
        "delta_m_auc": 1.25,
    }
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, run_dir / "best_model.pt")
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation, default=str))
    return TrainResult(run_dir, epochs - 1, hist, evaluation, train_seconds=4.5)


def tiny_onnx(path: Path, scale: float = 0.1) -> Path:
    """A real ONNX model: inputs categorical [B,2] int64 and dense [B,N_DENSE] float32, output
    ``probabilities`` [B, len(TASKS)] = sigmoid(dense @ W), W = scale * arange."""
    w = np.arange(N_DENSE * len(TASKS), dtype=np.float32).reshape(N_DENSE, len(TASKS)) * scale
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["dense", "W"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
        ],
        "tiny_ranker",
        [
            helper.make_tensor_value_info("categorical", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", N_DENSE]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(TASKS)])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
