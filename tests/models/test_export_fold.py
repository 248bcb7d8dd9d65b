"""Folding small embedding tables into the first dense layer (models.export.fold) changes no output."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from aptrank.data.spec import INPUT_NAMES, CategoricalFeature, FeatureSpec
from aptrank.models.embedding import SpecEmbedding
from aptrank.models.export import ExportModule, export_onnx
from aptrank.models.export.fold import FOLD_MAX_ROWS, FoldedFirstLayer, fold_groups, group_table
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import ARCHITECTURES, build_model


def test_groups_are_packed_first_fit_decreasing() -> None:
    # sizes 7, 5, 3, 2 (100 is above the limit): 7 | 5 | 5*3 | 7*2
    assert fold_groups([3, 5, 2, 100, 7], 20) == [[4, 2], [1, 0]]
    assert fold_groups([3, 5, 2, 100, 7], 2) == [[2]]
    assert fold_groups([3, 5], 0) == []
    with pytest.raises(ValueError, match="max_rows"):
        fold_groups([3], 2**24 + 1)


def test_folding_refuses_more_rows_than_float32_indexes_exactly(spec: FeatureSpec) -> None:
    """Group rows are computed in float32 (``group_rows``): 4096 * 4096 rows in one group and 4096
    in another are 2**24 + 4096 in all, refused before any table is built."""
    wide = dataclasses.replace(spec, categorical=tuple(CategoricalFeature(f"f{i}", f"f{i}", 4096) for i in range(3)))
    embedding = SpecEmbedding(wide, embedding_dim=2)
    first = torch.nn.Linear(embedding.output_dim, 3)
    assert fold_groups([4096] * 3, 2**24) == [[0, 1], [2]]
    with pytest.raises(ValueError, match=r"16781312 folded rows in all, more than 2\*\*24"):
        FoldedFirstLayer(embedding, first, 2**24)


@pytest.mark.parametrize("max_rows", [1, 16, 500, 4096])
def test_every_small_feature_is_in_exactly_one_group_within_the_limit(max_rows: int) -> None:
    vocab = [16, 99, 4, 12, 6, 10, 2, 3, 3, 9, 1213, 426, 17086, 5046, 1]
    groups = fold_groups(vocab, max_rows)
    members = sorted(c for g in groups for c in g)
    assert members == [c for c, v in enumerate(vocab) if v <= max_rows]
    assert all(math.prod(vocab[c] for c in g) <= max_rows for g in groups)


def test_group_table_rows_are_sums_of_member_rows() -> None:
    a = torch.arange(6.0).view(3, 2)
    b = 100 * torch.arange(4.0).view(2, 2)
    table = group_table([a, b])
    assert table.shape == (6, 2)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(table[i * 2 + j], a[i] + b[j])


@pytest.fixture
def mixed_spec(spec: FeatureSpec) -> FeatureSpec:
    """The test spec (user 7, item 11, author 5 rows) plus three small features: with 10 rows per
    group, item is kept and the rest packs into [user], [author, flag], [tab], [hour]."""
    extra = (
        CategoricalFeature("tab", "tab", 4),
        CategoricalFeature("flag", "flag", 2),
        CategoricalFeature("hour", "hour", 3),
    )
    return dataclasses.replace(spec, categorical=spec.categorical + extra)


def _extreme(spec: FeatureSpec, batch: FeatureBatch) -> FeatureBatch:
    """``batch`` with row 0 all last ids and row 1 all zero ids."""
    cat = batch.categorical.clone()
    cat[0] = torch.tensor([f.num_embeddings - 1 for f in spec.categorical])
    cat[1] = 0
    return dataclasses.replace(batch, categorical=cat)


@pytest.mark.parametrize("max_rows", [10, 4096])
def test_folded_layer_equals_the_first_layer_on_the_embedding(
    mixed_spec: FeatureSpec, small: dict, max_rows: int
) -> None:
    model = build_model("mmoe", mixed_spec, small).eval()
    module = ExportModule(model, fold_rows=max_rows)
    fold = module.fold
    assert isinstance(fold, FoldedFirstLayer)
    batch = _extreme(mixed_spec, FeatureBatch.random(mixed_spec, 33, torch.Generator().manual_seed(3)))
    with torch.no_grad():
        expected = module.head.first(model.embedding.forward_plain(*batch.inputs()))
        got = fold(*batch.inputs())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(module(*batch.inputs()), torch.sigmoid(model(batch)), rtol=0, atol=1e-6)
    vocab = [f.num_embeddings for f in mixed_spec.categorical]
    assert fold.groups == fold_groups(vocab, max_rows)
    assert fold.folded.shape == (
        sum(math.prod(vocab[c] for c in g) for g in fold.groups),
        module.head.first.out_features,
    )
    kept = [c for c in range(len(vocab)) if all(c not in g for g in fold.groups)]
    assert fold.keep_columns.tolist() == kept
    if kept:  # the GEMM reads only the unfolded features' embeddings, the sequences and the dense
        width = (len(kept) + len(mixed_spec.sequence)) * small["embedding_dim"] + len(mixed_spec.dense)
        assert fold.rest is not None and fold.rest.in_features == width


def test_group_rows_are_the_row_major_joint_index(mixed_spec: FeatureSpec, small: dict) -> None:
    model = build_model("mmoe", mixed_spec, small).eval()
    fold = FoldedFirstLayer(model.embedding, ExportModule(model, fold_rows=0).head.first, 10)
    assert fold.groups == [[0], [2, 4], [3], [5]] and fold.keep_columns.tolist() == [1]
    vocab = [f.num_embeddings for f in mixed_spec.categorical]
    cat = torch.tensor([[6, 10, 4, 3, 1, 2], [0, 0, 0, 0, 0, 0], [5, 9, 3, 2, 1, 1]])
    rows = fold.group_rows(cat)
    start = 0
    for g, group in enumerate(fold.groups):
        for r in range(cat.shape[0]):
            index = 0
            for c in group:
                index = index * vocab[c] + int(cat[r, c])
            assert int(rows[g, r]) == start + index
        start += math.prod(vocab[c] for c in group)


def test_folding_on_for_every_architecture_and_off_on_request(spec: FeatureSpec, small: dict) -> None:
    mmoe = build_model("mmoe", spec, small).eval()
    assert ExportModule(mmoe).fold is not None and FOLD_MAX_ROWS == 512
    assert ExportModule(mmoe, fold_rows=0).fold is None
    assert ExportModule(mmoe, fold_rows=4).fold is None  # no table has <= 4 rows
    for arch in ARCHITECTURES:  # every architecture's export head starts with one Linear layer
        assert ExportModule(build_model(arch, spec, small)).fold is not None, arch
    with pytest.raises(ValueError, match="fold_rows"):
        ExportModule(mmoe, fold_rows=-1)


@pytest.mark.parametrize("arch", ["mmoe", "ple"])
def test_onnx_rows_score_the_same_bits_at_any_batch_size(
    mixed_spec: FeatureSpec, small: dict, tmp_path: Path, arch: str
) -> None:
    """Online requests (often one candidate) and batch files must give identical scores: a row's
    probabilities do not depend on the rows scored with it (onnxruntime's ReduceSum broke this for
    one row, the product with ones does not; PLE's task mixes are one batched product)."""
    flags = tuple(CategoricalFeature(f"flag{i}", f"flag{i}", 3) for i in range(8))
    wide = dataclasses.replace(mixed_spec, categorical=mixed_spec.categorical + flags)
    model = build_model(arch, wide, small).eval()
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx", wide, fold_rows=4)))
    assert len(ExportModule(model, fold_rows=4).fold.groups) == 11  # ReduceSum's order differs from 8
    batch = FeatureBatch.random(wide, 40, torch.Generator().manual_seed(5))
    arrays = {n: t.numpy() for n, t in zip(INPUT_NAMES, batch.inputs(), strict=True)}
    (whole,) = session.run(None, arrays)
    for size in (1, 2, 3, 7, 16):
        parts = [session.run(None, {n: a[i : i + size] for n, a in arrays.items()})[0] for i in range(0, 40, size)]
        assert (np.concatenate(parts) == whole).all(), f"rows scored {size} at a time differ"
