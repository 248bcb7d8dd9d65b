"""model.dense_encoding: the piecewise-linear encoding's values, its edges, export parity, config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from aptrank.data.spec import INPUT_NAMES, FeatureSpec
from aptrank.models.config import ModelConfigError
from aptrank.models.dense_encoding import DenseEncodingConfig, PiecewiseLinearEncoding, quantile_edges
from aptrank.models.export import ExportModule, export_onnx
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import ARCHITECTURES, build_model, model_config

ENCODING = {"kind": "piecewise_linear", "bins": 4, "dim": 3}


def _fitted(spec: FeatureSpec, arch: str, small: dict) -> torch.nn.Module:
    """A model with the encoding on, its edges fitted to 500 random standardized rows."""
    model = build_model(arch, spec, {**small, "dense_encoding": ENCODING})
    dense = torch.randn(500, len(spec.dense), generator=torch.Generator().manual_seed(2)).numpy()
    model.embedding.dense_encoder.fit(dense)
    return model


def test_encoding_values_on_hand_made_edges() -> None:
    """Edges 0, 1, 3, 7 (widths 1, 2, 4): full bins left of x are 1, x's own bin its fraction, and
    both ends clip (below the first edge all 0, above the last all 1)."""
    encoder = PiecewiseLinearEncoding(1, DenseEncodingConfig(bins=3, dim=2))
    encoder.fit(np.array([[0.0], [1.0], [3.0], [7.0]]))
    assert encoder.left.tolist() == [[0.0, 1.0, 3.0]]
    assert encoder.inverse_width.tolist() == [[1.0, 0.5, 0.25]]
    x = torch.tensor([[-5.0], [0.0], [0.5], [1.0], [2.0], [5.0], [7.0], [100.0]])
    expected = [[0, 0, 0], [0, 0, 0], [0.5, 0, 0], [1, 0, 0], [1, 0.5, 0], [1, 1, 0.5], [1, 1, 1], [1, 1, 1]]
    assert encoder.encode(x)[:, 0].tolist() == expected


def test_linear_map_and_relu_per_feature() -> None:
    encoder = PiecewiseLinearEncoding(2, DenseEncodingConfig(bins=2, dim=2, relu=True, keep_scalar=False))
    encoder.fit(np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]))
    with torch.no_grad():
        encoder.weight.copy_(torch.tensor([[[1.0, -1.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]]))
        encoder.bias.copy_(torch.tensor([[[0.5, 0.0]], [[0.0, -1.0]]]))
        out = encoder(torch.tensor([[1.5, 3.0]]))  # encodings [1, 0.5] and [1, 0.5]
        kept = PiecewiseLinearEncoding(2, DenseEncodingConfig(bins=2, dim=2, relu=True))
        kept.load_state_dict(encoder.state_dict())
        scalar_first = kept(torch.tensor([[1.5, 3.0]]))
    # feature 0: [1 + 1 + 0.5, -1 + 0 + 0] -> ReLU [2.5, 0]; feature 1: [0, 1 + 1.5 - 1]
    assert out.tolist() == [[2.5, 0.0, 0.0, 1.5]]
    assert scalar_first.tolist() == [[1.5, 3.0, 2.5, 0.0, 0.0, 1.5]] and kept.output_dim == 6


def test_repeated_quantiles_become_dead_bins() -> None:
    """A mostly-zero column has fewer distinct edges than bins + 1: the rest are zero-width bins
    with inverse width 0 (always 0); a constant column has only dead bins."""
    values = np.array([[0.0, 3.0]] * 6 + [[1.0, 3.0], [2.0, 3.0], [3.0, 3.0], [4.0, 3.0]])
    left, inverse = quantile_edges(values, 4)  # quantiles 0, 0, 0, 1.75, 4 (linear interpolation)
    assert left[0].tolist() == [0.0, 1.75, 4.0, 4.0]
    assert inverse[0].tolist() == [1.0 / 1.75, 1.0 / 2.25, 0.0, 0.0]
    assert left[1].tolist() == [3.0] * 4 and inverse[1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="non-empty"):
        quantile_edges(values[:0], 4)


def test_output_width_and_the_edges_travel_in_the_state_dict(spec: FeatureSpec, small: dict) -> None:
    plain = build_model("mmoe", spec, small)
    model = _fitted(spec, "mmoe", small)
    assert model.embedding.output_dim == plain.embedding.output_dim + len(spec.dense) * 3  # the scalar stays
    copy = build_model("mmoe", spec, {**small, "dense_encoding": ENCODING})
    assert not torch.equal(copy.embedding.dense_encoder.left, model.embedding.dense_encoder.left)
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy.embedding.dense_encoder.left, model.embedding.dense_encoder.left)
    # the encoder's weights are dense shared parameters, never the tables' role
    roles = model.param_roles()
    names = model.param_role_names()
    assert "embedding.dense_encoder.weight" in names["shared"]
    assert len(roles["embeddings"]) == len(model.embedding.table_weights())


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_export_matches_torch_with_the_encoding(spec: FeatureSpec, small: dict, arch: str, tmp_path: Path) -> None:
    model = _fitted(spec, arch, small).eval()
    module = ExportModule(model)
    assert module.fold is not None, "the folded export keeps the encoded dense block in its GEMM"
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx", spec)))
    batch = FeatureBatch.random(spec, 40, torch.Generator().manual_seed(4))
    batch.dense[:2] = torch.tensor([[-50.0], [50.0]])  # far outside the edges: clipped
    arrays = {n: t.numpy() for n, t in zip(INPUT_NAMES, batch.inputs(), strict=True)}
    (got,) = session.run(None, arrays)
    with torch.no_grad():
        expected = torch.sigmoid(model(batch)).numpy()
        assert np.abs(module(*batch.inputs()).numpy() - expected).max() <= 1e-6
    assert np.abs(got - expected).max() <= 1e-5
    one_at_a_time = [session.run(None, {n: a[i : i + 1] for n, a in arrays.items()})[0] for i in range(40)]
    assert (np.concatenate(one_at_a_time) == got).all(), "a row scores the same bits alone and in a batch"


def test_dense_only_spec_encodes_too(spec: FeatureSpec, small: dict, tmp_path: Path) -> None:
    variant = dataclasses.replace(spec, categorical=(), sequence=())
    model = _fitted(variant, "shared_bottom", small).eval()
    assert model.embedding.output_dim == len(spec.dense) * (1 + 3)
    batch = FeatureBatch.random(variant, 6, torch.Generator().manual_seed(6))
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "d.onnx", variant)))
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, batch.inputs(), strict=True)})
    with torch.no_grad():
        assert np.abs(got - torch.sigmoid(model(batch)).numpy()).max() <= 1e-5


@pytest.mark.parametrize(
    ("encoding", "key", "words"),
    [
        ({"kind": "quantile_onehot"}, "model.dense_encoding.kind", "piecewise_linear"),
        ({"bins": 1}, "model.dense_encoding.bins", "must be >= 2"),
        ({"bins": 65}, "model.dense_encoding.bins", "must be <= 64"),
        ({"dim": 0}, "model.dense_encoding.dim", "must be >= 1"),
        ({"relu": "yes"}, "model.dense_encoding.relu", "expected true or false"),
        ({"bin": 8}, "model.dense_encoding.bin", "unknown key"),
    ],
)
def test_bad_encoding_keys_are_refused_naming_the_key(encoding: dict, key: str, words: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        model_config("ple", {"dense_encoding": encoding})
    assert err.value.key == key and words in str(err.value)


def test_absent_by_default_and_given_when_set() -> None:
    assert model_config("ple", {}).dense_encoding is None
    cfg = model_config("ple", {"dense_encoding": {"bins": 16}})
    assert cfg.dense_encoding == DenseEncodingConfig(bins=16, dim=4, relu=True, keep_scalar=True)
    assert cfg.given()["dense_encoding"] == {"bins": 16}
