"""param_roles: a partition of the parameters into shared / embeddings / task, output inside task."""

from __future__ import annotations

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.registry import build_model


def test_roles_partition_parameters(spec: FeatureSpec, arch: str, small: dict) -> None:
    model = build_model(arch, spec, small)
    roles = model.param_roles()
    assert set(roles) == {"shared", "embeddings", "task", "output"}
    ids = [id(p) for p in roles["shared"]] + [id(p) for p in roles["embeddings"]]
    ids += [id(p) for group in roles["task"] for p in group]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()), "each parameter exactly once"
    assert len(roles["task"]) == len(model.task_names)

    tables = list(model.embedding.table_weights().values())
    assert [id(p) for p in roles["embeddings"]] == [id(p) for p in tables] and len(tables) == 3
    task_ids = {id(p) for group in roles["task"] for p in group}
    assert {id(p) for p in roles["output"]} <= task_ids
    assert [tuple(p.shape) for p in roles["output"]] == [(1, 5), (1,)] * len(model.task_names)
    assert roles["shared"], "every architecture has a shared dense part"


def test_role_names(spec: FeatureSpec, small: dict) -> None:
    names = build_model("ple", spec, small).param_role_names()
    assert names["embeddings"] == [f"embedding.ebc.embedding_bags.{t}.weight" for t in ("user", "item", "author")]
    assert names["output"][:2] == ["towers.0.out.weight", "towers.0.out.bias"]
    assert all(n.startswith("towers.1.") for n in names["task"][1])
    # PLE's task-specific experts and all gates are shared parameters
    assert "levels.0.task_experts.2.experts.0.0.weight" in names["shared"]
    assert "levels.1.task_gates.0.linear.weight" in names["shared"]
    assert "levels.0.shared_gate.linear.bias" in names["shared"]


def test_task_params_only_see_their_own_loss(spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch) -> None:
    """The loss of task k has a gradient on tower k only; shared params get it from every task."""
    model = build_model(arch, spec, small)
    roles = model.param_roles()
    logits = model(batch)
    for k in range(len(model.task_names)):
        model.zero_grad(set_to_none=True)
        target = torch.ones_like(logits[:, k])
        nn.functional.binary_cross_entropy_with_logits(logits[:, k], target).backward(retain_graph=True)
        for j, group in enumerate(roles["task"]):
            touched = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in group)
            assert touched == (j == k), (k, j)
        assert any(p.grad is not None for p in roles["shared"])
