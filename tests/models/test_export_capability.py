"""Export is a model capability: each architecture gives its export head (``export_head()``), and a
new architecture exports through its own class and the registry alone, with ONNX equal to PyTorch."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from aptrank.data.spec import INPUT_NAMES, FeatureSpec
from aptrank.models.base import ModelHead, MultiTaskModel
from aptrank.models.config import ModelConfig
from aptrank.models.export import ExportModule, export_onnx
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.layers import MLP
from aptrank.models.mmoe import FusedMMoEHead
from aptrank.models.ple import FusedPLEHead
from aptrank.models.registry import ARCHITECTURES, build_model
from aptrank.models.shared_bottom import SharedBottomHead

HEADS = {
    "single_task": SharedBottomHead,
    "shared_bottom": SharedBottomHead,
    "mmoe": FusedMMoEHead,
    "ple": FusedPLEHead,
}


def test_every_registered_architecture_has_its_export_head() -> None:
    assert set(HEADS) == set(ARCHITECTURES)


def test_export_head_is_the_architectures_own(spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch) -> None:
    model = build_model(arch, spec, small).eval()
    head = model.export_head()
    assert type(head) is HEADS[arch]
    embedded = model.embedding(batch)
    with torch.no_grad():
        torch.testing.assert_close(head(embedded), model.head(embedded)[0], rtol=0, atol=1e-6)
        # the default every architecture falls back to: the model's own head, exactly
        torch.testing.assert_close(ModelHead(model)(embedded), model.head(embedded)[0], rtol=0, atol=0)


class TwoTowers(MultiTaskModel):
    """A new architecture as a user would add it: no export code of its own; each tower reads its
    own MLP on the embedded input (no shared layer)."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig) -> None:
        super().__init__(spec, config, spec.task_names)
        self.bottoms = nn.ModuleList(MLP(self.embedding.output_dim, [6]) for _ in self.task_names)
        self._add_towers(6)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        outs = [b(embedded) for b in self.bottoms]
        return outs, torch.stack(outs, dim=1)


def test_a_new_architecture_exports_through_its_class_and_the_registry(
    spec: FeatureSpec, small: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ARCHITECTURES, "two_towers", TwoTowers)
    model = build_model("two_towers", spec, small).eval()
    assert isinstance(ExportModule(model).head, ModelHead)
    path = export_onnx(model, tmp_path / "two_towers.onnx", spec)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    b = FeatureBatch.random(spec, 17, torch.Generator().manual_seed(3))
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, b.inputs(), strict=True)})
    with torch.no_grad():
        expected = torch.sigmoid(model(b)).numpy()
    assert got.shape == (17, len(spec.task_names))
    assert abs(got - expected).max() <= 1e-5
