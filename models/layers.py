"""Dense building blocks shared by every architecture: MLP, expert stack, softmax gate, task tower."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """``Linear -> ReLU -> Dropout`` per hidden size; identity when ``hidden`` is empty."""

    def __init__(self, input_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(input_dim, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            input_dim = size
        super().__init__(*layers)
        self.output_dim = input_dim


class Experts(nn.Module):
    """``n`` independent expert MLPs on the same input; output stacked as [B, n, H]."""

    def __init__(self, n: int, input_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.experts = nn.ModuleList(MLP(input_dim, hidden, dropout) for _ in range(n))
        self.output_dim = self.experts[0].output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(x) for expert in self.experts], dim=1)


class Gate(nn.Module):
    """Softmax gate over ``n`` experts (MMoE, Ma et al. KDD 2018, eq. 5): ``softmax(W x)`` [B, n]."""

    def __init__(self, input_dim: int, n: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)

    @staticmethod
    def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Gate-weighted sum of stacked expert outputs: [B, n] x [B, n, H] -> [B, H]."""
        return torch.einsum("bn,bnh->bh", weights, experts)


class Tower(nn.Module):
    """A task tower: ``MLP(hidden) -> Linear(., 1)``; ``out`` is the final (output) layer."""

    def __init__(self, input_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = MLP(input_dim, hidden, dropout)
        self.out = nn.Linear(self.mlp.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(x))


def stack_linears(layers: Sequence[nn.Linear]) -> nn.Linear:
    """One Linear computing every layer of ``layers`` (same input) side by side: weights stacked by
    output, a copy (export heads fuse the GEMMs that read one input into one)."""
    stacked = nn.Linear(layers[0].in_features, sum(layer.out_features for layer in layers))
    with torch.no_grad():
        stacked.weight.copy_(torch.cat([layer.weight for layer in layers]))
        stacked.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return stacked


def start_with_linear(mlps: Sequence[nn.Module]) -> bool:
    """Whether every module of ``mlps`` is an :class:`MLP` whose first layer is a Linear (the
    condition for fusing their first layers into one GEMM at export)."""
    return all(isinstance(m, MLP) and len(m) > 0 and isinstance(m[0], nn.Linear) for m in mlps)


class StackedTowers(nn.Module):
    """The export form of same-shaped :class:`Tower` s: ``forward(x [B, T, H]) -> logits [B, T]``
    with one batched product per layer (each task's weights a slice of one [T, out, in] tensor)
    where the training form runs T towers of per-task GEMMs, slices and a concatenation. The same
    arithmetic per task (Ma et al., KDD 2018, eq. 4's towers ``h^k``), fewer graph nodes: on the
    demo MMoE's ONNX graph 13 nodes become 8 (``bench/score.py``). Rows are the product's columns
    (``W @ x^T``): its row count is the layer's width whatever the batch, so onnxruntime adds every
    output in the same order for one candidate as for a batch (rows as the product's rows took
    another kernel for a single row and changed the last bits). Eval mode (dropout is identity); a
    copy of the weights, made when built."""

    def __init__(self, towers: Sequence[Tower]) -> None:
        super().__init__()
        layers = [[m for m in t.mlp if isinstance(m, nn.Linear)] + [t.out] for t in towers]
        shapes = {tuple(tuple(layer.weight.shape) for layer in task) for task in layers}
        if len(shapes) != 1:
            raise ValueError(f"StackedTowers: the towers' layer shapes differ ({sorted(shapes)})")
        self.depth = len(layers[0])
        with torch.no_grad():
            for i in range(self.depth):  # weights [T, out, in] and biases [T, out, 1] of layer i
                self.register_buffer(f"weight{i}", torch.stack([task[i].weight for task in layers]))
                self.register_buffer(f"bias{i}", torch.stack([task[i].bias.view(-1, 1) for task in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(1, 2, 0)  # [T, H, B]: each task's rows as columns
        for i in range(self.depth):
            h = torch.baddbmm(getattr(self, f"bias{i}"), getattr(self, f"weight{i}"), h)
            if i < self.depth - 1:
                h = torch.relu(h)
        return h.squeeze(1).transpose(0, 1)  # [T, 1, B] -> [B, T]
