"""ExportModule (plain tensors, no KJT) equals the training path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.embedding import FusedTables
from aptrank.models.export import ExportModule
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.mmoe import FusedMMoEHead
from aptrank.models.ple import MASKED_GATE_LOGIT, FusedPLEHead, over_all_experts
from aptrank.models.registry import build_model
from aptrank.models.shared_bottom import SharedBottomHead


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


@pytest.mark.parametrize("hidden", [(6,), (6, 5)])
def test_mmoe_exports_with_the_fused_head(
    spec: FeatureSpec, small: dict, edge_batch: FeatureBatch, hidden: tuple
) -> None:
    """MMoE's export head stacks the experts' first layers and the gates into one Linear and mixes by
    one batched product; one- and two-layer experts (dropout inactive in eval) give the training
    path's probabilities."""
    model = build_model("mmoe", spec, {**small, "expert_hidden": hidden, "dropout": 0.1}).eval()
    module = ExportModule(model)
    assert isinstance(module.head, FusedMMoEHead)
    experts, tasks = model.config.num_experts, len(model.task_names)
    assert module.head.first.out_features == experts * hidden[0] + tasks * experts
    with torch.no_grad():
        torch.testing.assert_close(module(*edge_batch.inputs()), torch.sigmoid(model(edge_batch)), rtol=0, atol=1e-6)


def test_fused_tables_hold_each_table_once_and_a_zero_row(spec: FeatureSpec, small: dict) -> None:
    model = build_model("ple", spec, small)
    tables = FusedTables(model.embedding)
    weights = model.embedding.table_weights()
    assert tables.table.shape[0] == sum(w.shape[0] for w in weights.values()) + 1
    assert bool((tables.table[tables.zero_row] == 0).all())
    start = int(tables.categorical_offsets[1])  # item_id: the item table, shared with recent_items
    assert int(tables.sequence_offsets[0, 0, 0]) == start
    torch.testing.assert_close(tables.table[start : start + weights["item"].shape[0]], weights["item"].detach())


@pytest.mark.parametrize(("levels", "hidden"), [(1, (6,)), (2, (6,)), (3, (6, 5))])
def test_ple_exports_with_its_first_level_fused(
    spec: FeatureSpec, small: dict, edge_batch: FeatureBatch, levels: int, hidden: tuple
) -> None:
    """PLE's first level: every expert's first layer, the task gates and (with more levels) the
    shared gate in one Linear, every gate's logits over all the level's experts (a task's gate
    masked off the other tasks' experts); one to three levels, one- and two-layer experts."""
    config = {**small, "ple_levels": levels, "expert_hidden": hidden, "dropout": 0.1}
    model = build_model("ple", spec, config).eval()
    module = ExportModule(model)
    assert isinstance(module.head, FusedPLEHead) and module.fold is not None
    tasks, shared, own = len(model.task_names), small["ple_shared_experts"], small["ple_task_experts"]
    experts = tasks * own + shared
    gates = (tasks + (1 if levels > 1 else 0)) * experts
    assert module.head.first.out_features == experts * hidden[0] + gates
    with torch.no_grad():
        expected = torch.sigmoid(model(edge_batch))
        torch.testing.assert_close(
            module.head(model.embedding.forward_plain(*edge_batch.inputs())),
            model.head(model.embedding.forward_plain(*edge_batch.inputs()))[0],
            rtol=0,
            atol=1e-6,
        )
        torch.testing.assert_close(module(*edge_batch.inputs()), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["shared_bottom", "single_task"])
def test_shared_bottom_exports_with_its_first_layer_folded(
    spec: FeatureSpec, small: dict, edge_batch: FeatureBatch, name: str
) -> None:
    model = build_model(name, spec, {**small, "dropout": 0.1}).eval()
    module = ExportModule(model)
    assert isinstance(module.head, SharedBottomHead) and module.head.first is model.bottom[0]
    assert module.fold is not None
    with torch.no_grad():
        torch.testing.assert_close(module(*edge_batch.inputs()), torch.sigmoid(model(edge_batch)), rtol=0, atol=1e-6)


def test_a_task_gate_over_all_experts_is_its_softmax_with_exact_zeros_elsewhere() -> None:
    """PLE's export gate (``over_all_experts``): task 1 of 3 with 2 own and 2 shared experts, its
    softmax over the 8 experts is its own gate's softmax on its block and the shared block and an
    exact 0 on the other tasks' blocks."""
    torch.manual_seed(4)
    gate = nn.Linear(6, 4)
    wide = over_all_experts(gate, task=1, task_experts=2, num_experts=8)
    x = torch.randn(5, 6) * 50  # large logits: the mask must still win
    with torch.no_grad():
        expected = torch.softmax(gate(x), dim=-1)
        got = torch.softmax(wide(x), dim=-1)
    assert torch.equal(got[:, [0, 1, 4, 5]], torch.zeros(5, 4))
    torch.testing.assert_close(got[:, [2, 3, 6, 7]], expected, rtol=0, atol=1e-7)
    assert torch.finfo(torch.float32).min < MASKED_GATE_LOGIT  # finite: the integrity check refuses Inf weights
