"""Export-time forms of dense heads: the same function on the same weights, in fewer, larger ops.

:class:`FusedMMoEHead` is MMoE's dense part (Ma et al., KDD 2018, eqs. 4-5) for the ONNX graph. The
E experts' first layers and the T gates all read the same input x, so their weights are stacked
into one matrix and computed by one GEMM ``x @ [W_e1 .. W_eE, W_g1 .. W_gT]``; the columns are then
split into expert activations [B, E, H] and gate logits [B, T, E]. Every task's gate-weighted sum
of the experts (eq. 4) is one batched product ``softmax(gates) @ experts`` -> [B, T, H]. Expert
layers after the first run per expert, towers as in the model. onnxruntime runs one wide GEMM far
better than E + T narrow ones (the gates have only E outputs each). Built from a trained model; the
export parity gate checks it against the PyTorch model to 1e-5.
"""

from __future__ import annotations

import torch
from torch import nn

from aptrank.models.base import MultiTaskModel
from aptrank.models.layers import MLP, Gate
from aptrank.models.mmoe import MMoE
from aptrank.models.ple import PLE
from aptrank.models.shared_bottom import SharedBottom


class FusedMMoEHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of an :class:`~models.mmoe.MMoE` (module docstring)."""

    def __init__(self, model: MMoE) -> None:
        super().__init__()
        if not fusable(model):
            raise ValueError("FusedMMoEHead: every expert must be an MLP starting with a Linear layer")
        experts = list(model.experts.experts)
        firsts = [e[0] for e in experts]
        gates = [g.linear for g in model.gates]
        self.num_experts, self.num_tasks, self.hidden = len(firsts), len(gates), firsts[0].out_features
        self.first = stack_linears([*firsts, *gates])
        # after the first Linear: its ReLU (applied here to all experts at once), then the rest
        self.rest = nn.ModuleList(nn.Sequential(*list(e)[2:]) for e in experts)
        self.towers = model.towers

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first` (the export may compute that
        layer another way: ``models.export_fold``)."""
        b, width = h.shape[0], self.num_experts * self.hidden
        experts = torch.relu(h[:, :width]).reshape(b, self.num_experts, self.hidden)
        if any(len(r) for r in self.rest):
            experts = torch.stack([r(experts[:, i]) for i, r in enumerate(self.rest)], dim=1)
        gates = torch.softmax(h[:, width:].reshape(b, self.num_tasks, self.num_experts), dim=-1)
        mixed = torch.bmm(gates, experts)  # [B, T, H]: eq. 4 for every task at once
        return torch.cat([tower(mixed[:, k]) for k, tower in enumerate(self.towers)], dim=1)


class FusedPLEHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of a :class:`~models.ple.PLE` (Tang et al., RecSys
    2020): as :class:`FusedMMoEHead`, the first extraction level's experts' first layers, its task
    gates and its shared gate all read the embedded input, so they are one GEMM; the level's gate
    mixes (eqs. 1-3) follow on the split columns, then the further levels and the towers as in the
    model (the same modules)."""

    def __init__(self, model: PLE) -> None:
        super().__init__()
        if not fusable(model):
            raise ValueError("FusedPLEHead: every expert must be an MLP starting with a Linear layer")
        level = model.levels[0]
        # expert order of the level's ``stacked`` output: task 0's experts, ..., shared experts
        experts = [e for group in (*level.task_experts, level.shared_experts) for e in group.experts]
        gates = [g.linear for g in level.task_gates]
        if level.shared_gate is not None:
            gates.append(level.shared_gate.linear)
        self.first = stack_linears([*(e[0] for e in experts), *gates])
        self.rest = nn.ModuleList(nn.Sequential(*list(e)[2:]) for e in experts)
        self.num_experts, self.hidden = len(experts), experts[0][0].out_features
        self.gate_sizes = [g.out_features for g in gates]
        self.task_experts, self.num_tasks = level.num_task_experts, len(level.task_gates)
        self.levels = model.levels[1:]
        self.towers = model.towers

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first`."""
        b, width, m = h.shape[0], self.num_experts * self.hidden, self.task_experts
        stacked = torch.relu(h[:, :width]).reshape(b, self.num_experts, self.hidden)
        if any(len(r) for r in self.rest):
            stacked = torch.stack([r(stacked[:, i]) for i, r in enumerate(self.rest)], dim=1)
        logits = torch.split(h[:, width:], self.gate_sizes, dim=1)
        shared = stacked[:, self.num_tasks * m :]
        task_inputs = [
            Gate.mix(torch.softmax(logits[k], dim=-1), torch.cat([stacked[:, k * m : (k + 1) * m], shared], dim=1))
            for k in range(self.num_tasks)
        ]
        shared_out = Gate.mix(torch.softmax(logits[-1], dim=-1), stacked) if len(logits) > self.num_tasks else None
        for level in self.levels:
            assert shared_out is not None  # every level but the last emits a shared output
            task_inputs, shared_out, stacked = level(task_inputs, shared_out)
        return torch.cat([tower(x) for tower, x in zip(self.towers, task_inputs, strict=True)], dim=1)


class SharedBottomHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of a :class:`~models.shared_bottom.SharedBottom` (and
    the single-task model), with the bottom's first Linear exposed as :attr:`first` so the export
    can fold small embedding tables into it (``models.export_fold``); the same modules, not copies."""

    def __init__(self, model: SharedBottom) -> None:
        super().__init__()
        layers = list(model.bottom)
        if not layers or not isinstance(layers[0], nn.Linear):
            raise ValueError("SharedBottomHead: the bottom must start with a Linear layer")
        self.first = layers[0]
        self.rest = nn.Sequential(*layers[1:])
        self.towers = model.towers

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first`."""
        hidden = self.rest(h)
        return torch.cat([tower(hidden) for tower in self.towers], dim=1)


def stack_linears(layers: list[nn.Linear]) -> nn.Linear:
    """One Linear computing every layer of ``layers`` (same input) side by side: weights stacked by
    output, a copy."""
    stacked = nn.Linear(layers[0].in_features, sum(layer.out_features for layer in layers))
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([layer.weight for layer in layers]))
        stacked.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return stacked


def fusable(model: MultiTaskModel) -> bool:
    """An MMoE, or a PLE's first level, whose experts are MLPs with at least one layer."""
    if isinstance(model, MMoE):
        experts = list(model.experts.experts)
    elif isinstance(model, PLE):
        level = model.levels[0]
        experts = [e for group in (*level.task_experts, level.shared_experts) for e in group.experts]
    else:
        return False
    return all(isinstance(e, MLP) and len(e) > 0 and isinstance(e[0], nn.Linear) for e in experts)


def export_head(model: MultiTaskModel) -> nn.Module:
    """The export-time head of ``model``: fused for MMoE and PLE (:func:`fusable`), the bottom's first
    layer exposed for Shared-Bottom with a bottom, else the model's own."""
    if fusable(model):
        return FusedMMoEHead(model) if isinstance(model, MMoE) else FusedPLEHead(model)  # type: ignore[arg-type]
    if isinstance(model, SharedBottom) and len(model.bottom) > 0:
        return SharedBottomHead(model)
    return _OwnHead(model)


class _OwnHead(nn.Module):
    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.model.head(embedded)[0]
