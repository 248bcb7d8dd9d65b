"""Tiny FeatureSpec and model sizes shared by the models/ tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aptrank.data.spec import DEFAULT_TASKS, CategoricalFeature, DenseFeature, FeatureSpec, SequenceFeature
from aptrank.models.feature_batch import FeatureBatch

ARCHS = ["single_task", "shared_bottom", "mmoe", "ple"]
SMALL = {
    "embedding_dim": 4,
    "bottom_hidden": [8, 6],
    "expert_hidden": [8, 6],
    "tower_hidden": [5],
    "num_experts": 3,
    "ple_levels": 2,
    "ple_shared_experts": 2,
    "ple_task_experts": 1,
    "seed": 0,
}


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    """Three tasks; item_id shares its table with recent_items, author_id with recent_authors;
    the two sequences have different max_len (so the padded width L = 4 exceeds one of them)."""
    return FeatureSpec(
        tasks=DEFAULT_TASKS,
        categorical=(
            CategoricalFeature("user_id", "user", 7),
            CategoricalFeature("item_id", "item", 11),
            CategoricalFeature("author_id", "author", 5),
        ),
        sequence=(
            SequenceFeature("recent_items", "item", 11, max_len=4),
            SequenceFeature("recent_authors", "author", 5, max_len=3),
        ),
        dense=(DenseFeature("user_age", 30.0, 10.0), DenseFeature("duration", 1.0, 2.0)),
    )


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def small() -> dict[str, object]:
    """Small model sizes (tiny tables, a few units) as a build_model config dict."""
    return dict(SMALL)


@pytest.fixture
def batch(spec: FeatureSpec) -> FeatureBatch:
    return FeatureBatch.random(spec, 9, torch.Generator().manual_seed(1))


@pytest.fixture
def edge_batch(batch: FeatureBatch) -> FeatureBatch:
    """``batch`` with full and empty sequences (row 1: both empty), non-zero junk past a length
    (row 3) and a length above its feature's max_len (row 2, recent_authors: clamped to 3)."""
    seq = batch.sequence.clone()
    lengths = batch.sequence_lengths.clone()
    lengths[0] = torch.tensor([4, 3])
    lengths[1] = torch.tensor([0, 0])
    lengths[2, 1] = 4
    seq[2, 1, 3] = 4
    lengths[3, 0] = 2
    seq[3, 0, 2:] = 10
    return dataclasses.replace(batch, sequence=seq, sequence_lengths=lengths)
