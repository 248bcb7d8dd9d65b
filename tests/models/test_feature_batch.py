"""FeatureBatch: the spec's plain-tensor layout, random construction, checks with clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aptrank.data.spec import INPUT_NAMES, FeatureSpec, SpecError
from aptrank.models.feature_batch import FeatureBatch


def test_inputs_follow_input_names(batch: FeatureBatch) -> None:
    assert [f.name for f in dataclasses.fields(FeatureBatch)][:4] == list(INPUT_NAMES)
    for name, t in zip(INPUT_NAMES, batch.inputs(), strict=True):
        assert t is getattr(batch, name)


def test_random_batch_layout(spec: FeatureSpec) -> None:
    b = FeatureBatch.random(spec, 64, torch.Generator().manual_seed(3))
    assert b.batch_size == 64
    assert b.categorical.shape == (64, 3) and b.categorical.dtype == torch.int64
    assert b.sequence.shape == (64, 2, 4) and b.sequence_lengths.shape == (64, 2)
    assert b.dense.shape == (64, 2) and b.dense.dtype == torch.float32
    assert b.labels is not None and b.labels.shape == (64, 3)
    assert set(b.labels.unique().tolist()) <= {0.0, 1.0}
    b.validate(spec)
    positions = torch.arange(4)
    for j, s in enumerate(spec.sequence):
        lengths = b.sequence_lengths[:, j]
        assert int(lengths.max()) <= s.max_len
        valid = positions < lengths.unsqueeze(1)
        assert bool((b.sequence[:, j][~valid] == 0).all()), "padding must be 0"
        assert bool((b.sequence[:, j][valid] >= 1).all()), "valid ids are real ids (not OOV)"
    # lengths cover the whole range [0, max_len] on 64 rows
    assert set(b.sequence_lengths[:, 1].tolist()) == {0, 1, 2, 3}


def test_random_is_deterministic(spec: FeatureSpec) -> None:
    a = FeatureBatch.random(spec, 16, torch.Generator().manual_seed(7))
    b = FeatureBatch.random(spec, 16, torch.Generator().manual_seed(7))
    c = FeatureBatch.random(spec, 16, torch.Generator().manual_seed(8))
    for x, y in zip(a.inputs(), b.inputs(), strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.categorical, c.categorical)


def test_to_and_with_labels(batch: FeatureBatch) -> None:
    moved = batch.to("cpu")
    for x, y in zip(batch.inputs(), moved.inputs(), strict=True):
        assert torch.equal(x, y)
    assert batch.labels is not None and moved.labels is not None and torch.equal(batch.labels, moved.labels)
    assert batch.with_labels(None).labels is None


def test_check_shapes_names_the_input(spec: FeatureSpec, batch: FeatureBatch) -> None:
    bad = dataclasses.replace(batch, dense=batch.dense.double())
    with pytest.raises(SpecError, match=r"'dense'.*torch.float32 \[9, 2\].*got torch.float64"):
        bad.check_shapes(spec)
    bad = dataclasses.replace(batch, sequence=batch.sequence[:, :, :3])
    with pytest.raises(SpecError, match="'sequence'"):
        bad.check_shapes(spec)
    bad = batch.with_labels(torch.zeros(9, 2))
    with pytest.raises(SpecError, match="'labels'"):
        bad.check_shapes(spec)


def test_validate_names_feature_and_rule(spec: FeatureSpec, batch: FeatureBatch) -> None:
    cat = batch.categorical.clone()
    cat[0, 2] = 5  # author_id has 5 rows: 0..4
    with pytest.raises(SpecError, match=r"author_id.*\[0, 4\].*max 5"):
        dataclasses.replace(batch, categorical=cat).validate(spec)
    lengths = batch.sequence_lengths.clone()
    lengths[3, 1] = 4  # recent_authors max_len 3
    with pytest.raises(SpecError, match=r"recent_authors' lengths.*\[0, 3\]"):
        dataclasses.replace(batch, sequence_lengths=lengths).validate(spec)
    with pytest.raises(ValueError, match="batch_size"):
        FeatureBatch.random(spec, 0, torch.Generator())
