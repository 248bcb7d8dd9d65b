"""ExportModule (plain tensors, no KJT) equals the training path."""

from __future__ import annotations

import pytest
import torch

from data.spec import FeatureSpec
from models.batch import FeatureBatch
from models.export import ExportModule
from models.registry import build_model


@pytest.mark.parametrize("edge", [False, True])
def test_export_module_equals_training_path(
    spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch, edge_batch: FeatureBatch, edge: bool
) -> None:
    model = build_model(arch, spec, small).eval()
    b = edge_batch if edge else batch
    with torch.no_grad():
        expected = torch.sigmoid(model(b))
        got = ExportModule(model)(*b.inputs())
    assert got.shape == (9, len(model.task_names))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert bool(((got > 0) & (got < 1)).all())
