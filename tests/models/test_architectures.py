"""Architectures: shapes, gates, reference computations (MMoE eqs. 4-5, CGC / PLE eq. 4), init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.config import ModelConfigError
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.layers import MLP, StackedTowers, Tower
from aptrank.models.ple import CGCLayer
from aptrank.models.registry import ARCHITECTURES, build_model


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            x = torch.clamp(_linear(layer, x), min=0)
    return x


def _tower(tower: Tower, x: torch.Tensor) -> torch.Tensor:
    return _linear(tower.out, _mlp(tower.mlp, x))


def _mix(gate_linear: nn.Linear, x: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    w = torch.softmax(_linear(gate_linear, x), dim=1)
    return sum(w[:, e : e + 1] * out for e, out in enumerate(experts))


def test_registry_and_unknown_name(spec: FeatureSpec) -> None:
    assert sorted(ARCHITECTURES) == ["mmoe", "ple", "shared_bottom", "single_task"]
    with pytest.raises(ValueError, match=r"unknown model architecture 'moe'; known: \['mmoe', 'ple', "):
        build_model("moe", spec, {})


def test_output_and_intermediate_shapes(spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch) -> None:
    model = build_model(arch, spec, small)
    logits, embedded, rep = model.forward_with_intermediates(batch)
    k = 1 if arch == "single_task" else 3
    assert model.task_names == (["click"] if k == 1 else spec.task_names)
    assert logits.shape == (9, k)
    assert embedded.shape == (9, 5 * 4 + 2)
    expected_rep = {"single_task": (9, 6), "shared_bottom": (9, 6), "mmoe": (9, 3, 6), "ple": (9, 3 * 1 + 2, 6)}
    assert rep.shape == expected_rep[arch]
    torch.testing.assert_close(model(batch), logits, rtol=0, atol=0)


def test_representation_is_what_the_towers_consume(
    spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch
) -> None:
    """Per-task gradients w.r.t. the representation (LibMTL's rep_grad) exist and are batched-exact."""
    model = build_model(arch, spec, small)
    logits, embedded, rep = model.forward_with_intermediates(batch)
    losses = logits.mean(dim=0)
    k = len(losses)
    batched = torch.autograd.grad(losses, rep, torch.eye(k), retain_graph=True, is_grads_batched=True)[0]
    for t in range(k):
        (one,) = torch.autograd.grad(losses[t], rep, retain_graph=True)
        torch.testing.assert_close(batched[t], one, rtol=0, atol=1e-7)
        assert bool(one.abs().sum() > 0)
    assert torch.autograd.grad(losses.sum(), embedded)[0].shape == embedded.shape


def test_single_task_picks_configured_task(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("single_task", spec, {**small, "task": "like"})
    assert model.task_names == ["like"] and model.label_columns == [1]
    assert model(batch).shape == (9, 1)
    assert build_model("mmoe", spec, small).label_columns == [0, 1, 2]
    with pytest.raises(ModelConfigError, match=r"model.task: 'share' is not a task of the FeatureSpec \['click'"):
        build_model("single_task", spec, {**small, "task": "share"})


def test_shared_bottom_matches_reference(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("shared_bottom", spec, small)
    logits, embedded, rep = model.forward_with_intermediates(batch)
    hidden = _mlp(model.bottom, embedded)
    torch.testing.assert_close(rep, hidden, rtol=0, atol=1e-6)
    expected = torch.cat([_tower(t, hidden) for t in model.towers], dim=1)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


def test_mmoe_matches_reference_and_gates_sum_to_one(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("mmoe", spec, small)
    logits, embedded, rep = model.forward_with_intermediates(batch)
    experts = [_mlp(e, embedded) for e in model.experts.experts]
    torch.testing.assert_close(rep, torch.stack(experts, dim=1), rtol=0, atol=1e-6)
    expected = torch.cat(
        [_tower(t, _mix(g.linear, embedded, experts)) for g, t in zip(model.gates, model.towers, strict=True)], 1
    )
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    for gate in model.gates:
        w = gate(embedded)
        assert w.shape == (9, 3) and bool((w > 0).all())
        torch.testing.assert_close(w.sum(dim=1), torch.ones(9), rtol=0, atol=1e-6)


def _ple_reference(model: nn.Module, embedded: torch.Tensor) -> torch.Tensor:
    """PLE written out from Tang et al. 2020 eq. 4, level by level."""
    k = len(model.towers)
    task_in, shared_in = [embedded] * k, embedded
    for level in model.levels:
        own = [[_mlp(e, task_in[t]) for e in level.task_experts[t].experts] for t in range(k)]
        shared = [_mlp(e, shared_in) for e in level.shared_experts.experts]
        next_task = [_mix(level.task_gates[t].linear, task_in[t], own[t] + shared) for t in range(k)]
        if level.shared_gate is not None:
            shared_in = _mix(level.shared_gate.linear, shared_in, [e for t in own for e in t] + shared)
        task_in = next_task
    return torch.cat([_tower(t, x) for t, x in zip(model.towers, task_in, strict=True)], dim=1)


def test_ple_matches_reference_and_gates_sum_to_one(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("ple", spec, {**small, "ple_levels": 3, "ple_task_experts": 2})
    logits, embedded, rep = model.forward_with_intermediates(batch)
    assert rep.shape == (9, 3 * 2 + 2, 6)
    torch.testing.assert_close(logits, _ple_reference(model, embedded), rtol=0, atol=1e-6)
    assert [lvl.shared_gate is not None for lvl in model.levels] == [True, True, False]
    for level in model.levels:
        x = embedded if level is model.levels[0] else torch.randn(9, 6)
        gates = [*level.task_gates, *([level.shared_gate] if level.shared_gate is not None else [])]
        for gate in gates:
            torch.testing.assert_close(gate(x).sum(dim=1), torch.ones(9), rtol=0, atol=1e-6)


def test_one_level_ple_equals_cgc(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("ple", spec, {**small, "ple_levels": 1, "ple_shared_experts": 3, "ple_task_experts": 2})
    logits, embedded, rep = model.forward_with_intermediates(batch)
    cgc = CGCLayer(embedded.shape[1], 3, num_shared=3, num_task_experts=2, hidden=[8, 6])
    cgc.load_state_dict(model.levels[0].state_dict())  # strict: same structure, no shared gate
    outputs, shared_out, stacked = cgc([embedded] * 3, embedded)
    assert shared_out is None
    torch.testing.assert_close(rep, stacked, rtol=0, atol=0)
    expected = torch.cat([t(x) for t, x in zip(model.towers, outputs, strict=True)], dim=1)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(logits, _ple_reference(model, embedded), rtol=0, atol=1e-6)


def test_init_is_deterministic(spec: FeatureSpec, arch: str, small: dict) -> None:
    small = {k: v for k, v in small.items() if k != "seed"}
    torch.manual_seed(0)
    a = build_model(arch, spec, small).state_dict()
    torch.manual_seed(0)
    b = build_model(arch, spec, small).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rng = torch.get_rng_state()
    c = build_model(arch, spec, {**small, "seed": 3}).state_dict()
    assert torch.equal(torch.get_rng_state(), rng), "config seed must not consume the global RNG"
    torch.manual_seed(123)
    d = build_model(arch, spec, {**small, "seed": 3}).state_dict()
    e = build_model(arch, spec, {**small, "seed": 4}).state_dict()
    assert all(torch.equal(c[k], d[k]) for k in c)
    assert not all(torch.equal(c[k], e[k]) for k in c)


def test_dropout_only_in_train_mode(spec: FeatureSpec, small: dict, batch: FeatureBatch) -> None:
    model = build_model("mmoe", spec, {**small, "dropout": 0.5})
    torch.manual_seed(0)
    assert not torch.equal(model(batch), model(batch))
    model.eval()
    torch.testing.assert_close(model(batch), model(batch), rtol=0, atol=0)


def test_gradients_reach_every_parameter(spec: FeatureSpec, arch: str, small: dict, batch: FeatureBatch) -> None:
    model = build_model(arch, spec, small)
    assert batch.labels is not None
    logits = model(batch)
    nn.functional.binary_cross_entropy_with_logits(logits, batch.labels[:, model.label_columns]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
        assert bool(grad.abs().sum() > 0), f"{name} got a zero gradient"


@pytest.mark.parametrize("hidden", [[], [8], [8, 4]])
def test_stacked_towers_compute_each_tower_on_its_task_input(hidden: list[int]) -> None:
    """The export form of the towers: task k's logit is tower k on x[:, k], for 0-2 hidden layers
    (that onnxruntime scores a row the same alone as in a batch is
    ``test_onnx_rows_score_the_same_bits_at_any_batch_size``)."""
    torch.manual_seed(3)
    towers = [Tower(6, hidden).eval() for _ in range(3)]
    x = torch.randn(9, 3, 6)
    stacked = StackedTowers(towers)
    expected = torch.cat([_tower(t, x[:, k]) for k, t in enumerate(towers)], dim=1)
    out = stacked(x)
    assert out.shape == (9, 3)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat([stacked(x[i : i + 1]) for i in range(9)]), out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="layer shapes differ"):
        StackedTowers([Tower(6, [8]), Tower(6, [4])])
