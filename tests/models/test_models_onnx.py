"""export_onnx: dynamo export with a dynamic batch axis; onnxruntime matches PyTorch to 1e-5."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from aptrank.data.spec import INPUT_NAMES, OUTPUT_NAME, FeatureSpec, SpecError
from aptrank.models.export import EXAMPLE_BATCH_SIZE, export_onnx
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import build_model


def _onnx_matches_torch(model: torch.nn.Module, path: Path, spec: FeatureSpec, sizes: tuple[int, ...]) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    for size in sizes:
        assert size != EXAMPLE_BATCH_SIZE
        b = FeatureBatch.random(spec, size, torch.Generator().manual_seed(size))
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, b.inputs(), strict=True)})
        with torch.no_grad():
            expected = torch.sigmoid(model(b)).numpy()
        assert got.shape == expected.shape == (size, len(model.task_names))
        assert abs(got - expected).max() <= 1e-5


def test_every_architecture_exports(spec: FeatureSpec, arch: str, small: dict, tmp_path: Path) -> None:
    model = build_model(arch, spec, small)
    path = export_onnx(model, tmp_path / "nested" / f"{arch}.onnx", spec)
    assert model.training, "export restores the training flag"
    model.eval()
    _onnx_matches_torch(model, path, spec, (1, 3, 33))

    proto = onnx.load(str(path))
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name}: batch axis is not dynamic"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert FeatureSpec.from_json(meta["feature_spec"]) == spec
    assert meta["feature_spec_hash"] == spec.hash
    assert json.loads(meta["task_names"]) == model.task_names


def test_dense_only_spec_exports(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    """Empty inputs ([B, 0] categoricals, [B, 0, 0] sequences) keep their place in the signature."""
    variant = dataclasses.replace(spec, categorical=(), sequence=())
    model = build_model("mmoe", variant, small).eval()
    _onnx_matches_torch(model, export_onnx(model, tmp_path / "dense_only.onnx", variant), variant, (2,))


def test_spec_mismatch_is_refused(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    model = build_model("shared_bottom", spec, small)
    other = dataclasses.replace(spec, dense=spec.dense[:1])
    with pytest.raises(SpecError, match="not the one the model was built from"):
        export_onnx(model, tmp_path / "m.onnx", other)
