"""SpecEmbedding: TorchRec lookup vs plain nn.EmbeddingBag, export path vs training path, sparse grads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from aptrank.data.spec import FeatureSpec, SpecError
from aptrank.models.embedding import FusedTables, SpecEmbedding
from aptrank.models.feature_batch import FeatureBatch


def _embedding(spec: FeatureSpec, sparse: bool = True) -> SpecEmbedding:
    torch.manual_seed(0)
    return SpecEmbedding(spec, embedding_dim=4, sparse=sparse)


def _reference(emb: SpecEmbedding, spec: FeatureSpec, batch: FeatureBatch) -> torch.Tensor:
    """Independent pooling: one plain nn.EmbeddingBag(mode='mean') per table with the same weights,
    bags written out example by example."""
    bags = {}
    for name, weight in emb.table_weights().items():
        bag = nn.EmbeddingBag(weight.shape[0], weight.shape[1], mode="mean")
        bag.weight.data.copy_(weight.detach())
        bags[name] = bag
    parts = []
    for i, f in enumerate(spec.categorical):
        ids = batch.categorical[:, i]
        parts.append(bags[f.table](ids, torch.arange(len(ids))))
    for j, s in enumerate(spec.sequence):
        ids, offsets = [], []
        for row in range(batch.batch_size):
            n = min(int(batch.sequence_lengths[row, j]), s.max_len)
            offsets.append(len(ids))
            ids.extend(batch.sequence[row, j, :n].tolist())
        parts.append(bags[s.table](torch.tensor(ids, dtype=torch.int64), torch.tensor(offsets)))
    return torch.cat([*parts, batch.dense], dim=1)


def test_one_table_per_spec_table_with_shared_features(spec: FeatureSpec) -> None:
    emb = _embedding(spec)
    assert emb.ebc is not None
    configs = {c.name: c for c in emb.ebc.embedding_bag_configs()}
    assert list(configs) == ["user", "item", "author"]
    assert configs["item"].feature_names == ["item_id", "recent_items"]
    assert configs["author"].feature_names == ["author_id", "recent_authors"]
    assert [c.num_embeddings for c in configs.values()] == [7, 11, 5]
    assert emb.output_dim == 5 * 4 + 2
    assert all(bag.sparse for bag in emb.ebc.embedding_bags.values())


def test_torchrec_lookup_equals_plain_embedding_bag(
    spec: FeatureSpec, batch: FeatureBatch, edge_batch: FeatureBatch
) -> None:
    emb = _embedding(spec)
    out = emb(batch)
    assert out.shape == (batch.batch_size, emb.output_dim)
    torch.testing.assert_close(out, _reference(emb, spec, batch), rtol=0, atol=1e-6)
    # a length-1 bag is the row itself; an empty sequence pools to zeros
    user_rows = emb.table_weights()["user"][batch.categorical[:, 0]]
    torch.testing.assert_close(out[:, :4], user_rows, rtol=0, atol=0)
    assert bool((emb(edge_batch)[1, 12:20] == 0).all()), "row 1 has two empty sequences"


@pytest.mark.parametrize("edge", [False, True])
def test_plain_path_equals_training_path(
    spec: FeatureSpec, batch: FeatureBatch, edge_batch: FeatureBatch, edge: bool
) -> None:
    emb = _embedding(spec)
    b = edge_batch if edge else batch
    expected = _reference(emb, spec, b)
    torch.testing.assert_close(emb(b), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(emb.forward_plain(*b.inputs()), expected, rtol=0, atol=1e-6)


def test_plain_path_with_one_shared_max_len_clamps_lengths_with_one_bound(
    spec: FeatureSpec, edge_batch: FeatureBatch
) -> None:
    """Sequences sharing one max_len: the lengths are clamped to [0, max_len] by one scalar bound
    (``FusedTables.common_max_len``), including lengths above it and negative ones."""
    same = dataclasses.replace(spec, sequence=tuple(dataclasses.replace(s, max_len=4) for s in spec.sequence))
    lengths = edge_batch.sequence_lengths.clone()
    lengths[4] = torch.tensor([9, -2])  # above max_len, negative
    b = dataclasses.replace(edge_batch, sequence_lengths=lengths)
    emb = _embedding(same)
    assert FusedTables(emb).common_max_len == 4 and FusedTables(_embedding(spec)).common_max_len is None
    clamped = dataclasses.replace(b, sequence_lengths=lengths.clamp(0, 4))
    plain = emb.forward_plain(*b.inputs())
    assert torch.equal(plain, emb.forward_plain(*clamped.inputs()))
    torch.testing.assert_close(plain, _reference(emb, same, clamped), rtol=0, atol=1e-6)
    torch.testing.assert_close(plain, emb(b), rtol=0, atol=1e-6)
    assert bool((plain[4, 4 * 4 : 5 * 4] == 0).all()), "a negative length pools to zeros"
    assert bool((plain[4, 3 * 4 : 4 * 4] != 0).all()), "length 9 pools the first 4 positions"


def test_sparse_row_gradients(spec: FeatureSpec, batch: FeatureBatch) -> None:
    emb = _embedding(spec)
    emb(batch).sum().backward()
    item = emb.table_weights()["item"]
    assert item.grad is not None and item.grad.is_sparse
    used = set(batch.categorical[:, 1].tolist())
    for row in range(batch.batch_size):
        used |= set(batch.sequence[row, 0, : int(batch.sequence_lengths[row, 0])].tolist())
    touched = set(item.grad.coalesce().indices()[0].tolist())
    assert touched == used

    dense_emb = _embedding(spec, sparse=False)
    dense_emb(batch).sum().backward()
    dense_grad = dense_emb.table_weights()["item"].grad
    assert dense_grad is not None and not dense_grad.is_sparse
    torch.testing.assert_close(item.grad.to_dense(), dense_grad, rtol=0, atol=1e-6)


def test_dense_only_spec_passes_dense_through(spec: FeatureSpec, batch: FeatureBatch) -> None:
    dense_spec = dataclasses.replace(spec, categorical=(), sequence=())
    emb = SpecEmbedding(dense_spec, embedding_dim=4)
    b = FeatureBatch.random(dense_spec, 5, torch.Generator().manual_seed(0))
    assert emb.ebc is None and emb.output_dim == 2
    assert torch.equal(emb(b), b.dense)
    assert torch.equal(emb.forward_plain(*b.inputs()), b.dense)


def test_wrong_shape_raises_naming_input(spec: FeatureSpec, batch: FeatureBatch) -> None:
    emb = _embedding(spec)
    with pytest.raises(SpecError, match="'categorical'"):
        emb(dataclasses.replace(batch, categorical=batch.categorical[:, :2]))
