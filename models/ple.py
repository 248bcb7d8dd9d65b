"""PLE: Progressive Layered Extraction (Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

One extraction level is a CGC (Customized Gate Control, section 4.2): each task k owns m_t experts,
all tasks share m_s experts; task k's gate mixes its own and the shared experts,
g^k(x) = softmax(W^k x) [E^k(x), E^s(x)] (eqs. 1-3). PLE stacks L levels (section 4.3, eq. 4): at
level j the task-k experts and gate read task k's output of level j-1, the shared experts read the
shared output of level j-1, and every level but the last also has a shared gate over all experts
whose output feeds the next level's shared experts. A one-level PLE is exactly a CGC.

Export form (:class:`FusedPLEHead`): as MMoE's, the first level's experts' first layers, its task
gates and its shared gate all read the embedded input, so they are one GEMM; the level's gate
mixes (eqs. 1-3) follow as one softmax and one batched product over all of the level's experts:
each task's gate computes logits over all of them (:func:`over_all_experts`: its own rows on its
own and the shared experts, a -1e30 logit on the other tasks' experts, whose softmax weight is an
exact 0), so one ``Softmax`` and one ``bmm`` as in MMoE's eq. 4 replace a slice, concat and
einsum per task (then a 0/1 mask product, 53 -> 45 nodes with the sequence trims on the demo
graph, ``bench/score.py``), then the further levels and the towers as in the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import HiddenSizes, ModelConfig, PositiveInt
from aptrank.models.layers import Experts, Gate, StackedTowers, stack_linears, start_with_linear


class PLEConfig(ModelConfig):
    """The ``model`` section of ``arch: ple``: ``ple_levels`` extraction levels, each with
    ``ple_shared_experts`` shared and ``ple_task_experts`` per-task experts of ``expert_hidden`` sizes."""

    arch: Literal["ple"] = "ple"
    expert_hidden: HiddenSizes = (128, 64)
    ple_levels: PositiveInt = 2
    ple_shared_experts: PositiveInt = 2
    ple_task_experts: PositiveInt = 1


class CGCLayer(nn.Module):
    """One CGC / PLE extraction level.

    ``forward(task_inputs, shared_input)`` returns (one output [B, H] per task, the shared output
    [B, H] or None when ``shared_gate`` is False, all experts stacked [B, K*m_t + m_s, H] in the order
    task 0's experts, ..., task K-1's experts, shared experts).
    """

    def __init__(
        self,
        input_dim: int,
        num_tasks: int,
        num_shared: int,
        num_task_experts: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        shared_gate: bool = False,
    ) -> None:
        super().__init__()
        self.task_experts = nn.ModuleList(
            Experts(num_task_experts, input_dim, hidden, dropout) for _ in range(num_tasks)
        )
        self.shared_experts = Experts(num_shared, input_dim, hidden, dropout)
        self.task_gates = nn.ModuleList(Gate(input_dim, num_task_experts + num_shared) for _ in range(num_tasks))
        self.shared_gate = Gate(input_dim, num_tasks * num_task_experts + num_shared) if shared_gate else None
        self.num_task_experts = num_task_experts
        self.output_dim = self.shared_experts.output_dim

    def forward(
        self, task_inputs: Sequence[torch.Tensor], shared_input: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        own = [experts(x) for experts, x in zip(self.task_experts, task_inputs, strict=True)]
        stacked = torch.cat([*own, self.shared_experts(shared_input)], dim=1)
        # gates read slices of ``stacked`` so that it is the representation they consume (rep_grad)
        m = self.num_task_experts
        shared = stacked[:, len(own) * m :]
        outputs = [
            Gate.mix(gate(x), torch.cat([stacked[:, k * m : (k + 1) * m], shared], dim=1))
            for k, (gate, x) in enumerate(zip(self.task_gates, task_inputs, strict=True))
        ]
        shared_out = None if self.shared_gate is None else Gate.mix(self.shared_gate(shared_input), stacked)
        return outputs, shared_out, stacked


class PLE(MultiTaskModel):
    """Embedding -> L CGC levels (representation: last level's experts [B, K*m_t + m_s, H]) -> towers."""

    config_class = PLEConfig

    def __init__(self, spec: FeatureSpec, config: PLEConfig) -> None:
        super().__init__(spec, config, spec.task_names)
        self.levels = nn.ModuleList()
        input_dim = self.embedding.output_dim
        for level in range(config.ple_levels):
            cgc = CGCLayer(
                input_dim,
                len(self.task_names),
                config.ple_shared_experts,
                config.ple_task_experts,
                config.expert_hidden,
                config.dropout,
                shared_gate=level < config.ple_levels - 1,
            )
            self.levels.append(cgc)
            input_dim = cgc.output_dim
        self._add_towers(input_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        task_inputs: list[torch.Tensor] = [embedded] * len(self.task_names)
        shared: torch.Tensor | None = embedded
        stacked = embedded
        for level in self.levels:
            assert shared is not None  # every level but the last emits a shared output
            task_inputs, shared, stacked = level(task_inputs, shared)
        return task_inputs, stacked

    def export_head(self) -> nn.Module:
        """:class:`FusedPLEHead` (module docstring) when every first-level expert starts with a Linear."""
        return FusedPLEHead(self) if start_with_linear(first_level_experts(self)) else super().export_head()


def first_level_experts(model: PLE) -> list[nn.Module]:
    """The first level's experts in the order of its ``stacked`` output: task 0's, ..., shared."""
    level = model.levels[0]
    return [e for group in (*level.task_experts, level.shared_experts) for e in group.experts]


class FusedPLEHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of a :class:`PLE` with the first level's experts' first
    layers and its gates in one GEMM, ``first`` (module docstring; a copy of the weights), the
    further levels and the towers the model's own modules."""

    def __init__(self, model: PLE) -> None:
        super().__init__()
        experts = first_level_experts(model)
        if not start_with_linear(experts):
            raise ValueError("FusedPLEHead: every expert must be an MLP starting with a Linear layer")
        level = model.levels[0]
        gates = [g.linear for g in level.task_gates]
        if level.shared_gate is not None:
            gates.append(level.shared_gate.linear)
        self.num_experts, self.hidden = len(experts), experts[0][0].out_features
        self.num_tasks = len(level.task_gates)
        task_gates = [
            over_all_experts(g, k, level.num_task_experts, self.num_experts)
            for k, g in enumerate(gates[: self.num_tasks])
        ]
        self.first = stack_linears([*(e[0] for e in experts), *task_gates, *gates[self.num_tasks :]])
        self.rest = nn.ModuleList(nn.Sequential(*list(e)[2:]) for e in experts)
        self.levels = model.levels[1:]
        self.towers = StackedTowers(model.towers)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first`."""
        b, width = h.shape[0], self.num_experts * self.hidden
        stacked = torch.relu(h[:, :width]).reshape(b, self.num_experts, self.hidden)
        if any(len(r) for r in self.rest):
            stacked = torch.stack([r(stacked[:, i]) for i, r in enumerate(self.rest)], dim=1)
        # every gate over all the level's experts (the shared gate, when there is one, last): one
        # softmax and one batched product, eqs. 1-3 for every task at once
        gates = torch.softmax(h[:, width:].reshape(b, -1, self.num_experts), dim=-1)
        mixed = torch.bmm(gates, stacked)  # [B, K (+ 1), H]
        if not len(self.levels):
            return self.towers(mixed)
        task_inputs: list[torch.Tensor] = list(mixed[:, : self.num_tasks].unbind(1))
        shared_out: torch.Tensor | None = mixed[:, self.num_tasks]
        for level in self.levels:
            assert shared_out is not None  # every level but the last emits a shared output
            task_inputs, shared_out, stacked = level(task_inputs, shared_out)
        return self.towers(torch.stack(task_inputs, dim=1))


MASKED_GATE_LOGIT = -1e30
"""The logit of an expert outside a task's gate: finite (weights are checked for NaN/Inf), and so far
below any logit that its softmax weight is an exact 0 in float32 (PyTorch and onnxruntime alike)."""


def over_all_experts(gate: nn.Linear, task: int, task_experts: int, num_experts: int) -> nn.Linear:
    """Task ``task``'s gate (logits over its own ``task_experts`` experts, then the shared ones, as
    :meth:`CGCLayer.forward` mixes them) as logits over all ``num_experts`` of the level in the
    order of its ``stacked`` output: its rows on its own block and the shared block, zero weights
    and :data:`MASKED_GATE_LOGIT` on the other tasks' blocks, so that its softmax is the gate's
    softmax with exact zeros elsewhere (a copy of the weights)."""
    own = range(task * task_experts, (task + 1) * task_experts)
    shared = range(num_experts - (gate.out_features - task_experts), num_experts)
    columns = torch.tensor([*own, *shared])
    wide = nn.Linear(gate.in_features, num_experts)
    with torch.no_grad():
        wide.weight.zero_()
        wide.bias.fill_(MASKED_GATE_LOGIT)
        wide.weight[columns] = gate.weight
        wide.bias[columns] = gate.bias
    return wide
