"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

E expert MLPs read the embedded input; each task k has its own softmax gate g_k(x) over the experts
(eq. 5) and its tower reads f_k(x) = sum_e g_k(x)_e * expert_e(x) (eq. 4).

Export form (:class:`FusedMMoEHead`): the E experts' first layers and the T gates all read the same
input x, so their weights are stacked into one matrix and computed by one GEMM
``x @ [W_e1 .. W_eE, W_g1 .. W_gT]``; the columns are then split into expert activations [B, E, H]
and gate logits [B, T, E]. Every task's gate-weighted sum of the experts (eq. 4) is one batched
product ``softmax(gates) @ experts`` -> [B, T, H]. Expert layers after the first run per expert,
towers as in the model. onnxruntime runs one wide GEMM far better than E + T narrow ones (the gates
have only E outputs each). The export parity gate checks it against the PyTorch model to 1e-5.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import HiddenSizes, ModelConfig, PositiveInt
from aptrank.models.layers import Experts, Gate, StackedTowers, stack_linears, start_with_linear


class MMoEConfig(ModelConfig):
    """The ``model`` section of ``arch: mmoe``: ``num_experts`` expert MLPs of ``expert_hidden`` sizes
    (the last size is the expert output H)."""

    arch: Literal["mmoe"] = "mmoe"
    expert_hidden: HiddenSizes = (128, 64)
    num_experts: PositiveInt = 4


class MMoE(MultiTaskModel):
    """Embedding -> E experts (representation [B, E, H]) -> one gate + tower per task."""

    config_class = MMoEConfig

    def __init__(self, spec: FeatureSpec, config: MMoEConfig) -> None:
        super().__init__(spec, config, spec.task_names)
        d = self.embedding.output_dim
        self.experts = Experts(config.num_experts, d, config.expert_hidden, config.dropout)
        self.gates = nn.ModuleList(Gate(d, config.num_experts) for _ in self.task_names)
        self._add_towers(self.experts.output_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        experts = self.experts(embedded)
        return [Gate.mix(gate(embedded), experts) for gate in self.gates], experts

    def export_head(self) -> nn.Module:
        """:class:`FusedMMoEHead` (module docstring) when every expert starts with a Linear layer."""
        return FusedMMoEHead(self) if start_with_linear(self.experts.experts) else super().export_head()


class FusedMMoEHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of an :class:`MMoE` in one GEMM for all experts' first
    layers and all gates (module docstring); ``first`` is that GEMM, a copy of the weights."""

    def __init__(self, model: MMoE) -> None:
        super().__init__()
        experts = list(model.experts.experts)
        if not start_with_linear(experts):
            raise ValueError("FusedMMoEHead: every expert must be an MLP starting with a Linear layer")
        firsts = [e[0] for e in experts]
        gates = [g.linear for g in model.gates]
        self.num_experts, self.num_tasks, self.hidden = len(firsts), len(gates), firsts[0].out_features
        self.first = stack_linears([*firsts, *gates])
        # after the first Linear: its ReLU (applied here to all experts at once), then the rest
        self.rest = nn.ModuleList(nn.Sequential(*list(e)[2:]) for e in experts)
        self.towers = StackedTowers(model.towers)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first` (the export may compute that
        layer another way: ``models.export.fold``)."""
        b, width = h.shape[0], self.num_experts * self.hidden
        experts = torch.relu(h[:, :width]).reshape(b, self.num_experts, self.hidden)
        if any(len(r) for r in self.rest):
            experts = torch.stack([r(experts[:, i]) for i, r in enumerate(self.rest)], dim=1)
        gates = torch.softmax(h[:, width:].reshape(b, self.num_tasks, self.num_experts), dim=-1)
        mixed = torch.bmm(gates, experts)  # [B, T, H]: eq. 4 for every task at once
        return self.towers(mixed)
