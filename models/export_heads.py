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

from models.base import MultiTaskModel
from models.layers import MLP
from models.mmoe import MMoE
from models.shared_bottom import SharedBottom


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
        layers = [*firsts, *gates]
        self.first = nn.Linear(firsts[0].in_features, sum(layer.out_features for layer in layers))
        with torch.no_grad():
            self.first.weight.copy_(torch.cat([layer.weight for layer in layers]))
            self.first.bias.copy_(torch.cat([layer.bias for layer in layers]))
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


def fusable(model: MultiTaskModel) -> bool:
    """An MMoE whose experts are MLPs with at least one layer."""
    return isinstance(model, MMoE) and all(
        isinstance(e, MLP) and len(e) > 0 and isinstance(e[0], nn.Linear) for e in model.experts.experts
    )


def export_head(model: MultiTaskModel) -> nn.Module:
    """The export-time head of ``model``: fused for MMoE (:func:`fusable`), the bottom's first layer
    exposed for Shared-Bottom with a bottom, else (PLE) the model's own."""
    if fusable(model):
        return FusedMMoEHead(model)  # type: ignore[arg-type]
    if isinstance(model, SharedBottom) and len(model.bottom) > 0:
        return SharedBottomHead(model)
    return _OwnHead(model)


class _OwnHead(nn.Module):
    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.model.head(embedded)[0]
