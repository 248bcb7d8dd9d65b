"""Piecewise-linear encoding of the dense features (``model.dense_encoding``).

Gorishniy, Rubachev and Babenko, "On Embeddings for Numerical Features in Tabular Deep Learning"
(NeurIPS 2022), sec. 3.2: a scalar feature ``x`` with bin edges ``b_0 < ... < b_T`` (quantiles of the
training split, "PLE-Q") becomes the T-vector

    PLE(x)_t = clip((x - b_{t-1}) / (b_t - b_{t-1}), 0, 1)

(1 for every bin left of ``x``, the fraction of its own bin, 0 to the right), then a per-feature
linear map to ``dim`` outputs and a ReLU (their "Q-LR" embedding; ``relu: false`` drops it). An MLP
then reads thresholds the way a tree ensemble does, where a single standardized scalar only gives
its first layer one slope per feature. The paper leaves the outer sides of the first and the last
bin unclipped; here both ends are clipped, so a value outside the training range (a count that
grew since training) gives the encoding of the nearest edge, bounded like the rest.

By default the standardized scalar itself stays in the output next to its encoding
(``keep_scalar``): on KuaiRand the rate features have long tails (a user's like rate: the top
eighth of the rows spans 0.0 to 23 standard deviations) that quantile bins squash into their last
bin, and replacing the scalar by the encoding lost 0.014 validation AUC on like (3 seeds,
docs/results.md); with the scalar kept, today's input is a special case of the encoded one.

The edges are buffers of the module (:meth:`PiecewiseLinearEncoding.fit`, called by the trainer on
the training split's dense matrix before the first step), so they live in the state dict: a
checkpoint, the exported ONNX graph and every scorer use the same ones. Features with repeated
quantiles (a count that is 0 for most rows) have fewer distinct edges than ``bins + 1``: the
missing bins get zero width and an inverse width of 0, so they always encode 0 (a dead input of
the linear map) and the tensor keeps its [F, T] shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from aptrank.config_model import ConfigModel


class DenseEncodingConfig(ConfigModel):
    """``model.dense_encoding``: how the dense features enter the network (absent: one standardized
    scalar each).

    * ``kind``: ``piecewise_linear`` (the module docstring; the only kind).
    * ``bins``: T, the quantile bins per feature (training-split quantiles at ``t / T``).
    * ``dim``: outputs of the per-feature linear map; the first layer's input grows by
      ``len(dense) * (dim - 1)``.
    * ``relu``: a ReLU after the linear map (the paper's "Q-LR"; false: "Q-L").
    * ``keep_scalar``: the standardized scalar stays in the output before the encodings (module
      docstring); false: the encodings replace it.
    """

    kind: Literal["piecewise_linear"] = "piecewise_linear"
    bins: Annotated[int, Field(ge=2, le=64)] = 8
    dim: Annotated[int, Field(ge=1, le=64)] = 4
    relu: bool = True
    keep_scalar: bool = True


def quantile_edges(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(left edges [F, bins], inverse widths [F, bins]) of each column of ``values`` [N, F]: the
    distinct quantiles at ``t / bins`` (float64), the bins between them first, then zero-width bins
    (inverse width 0) at the last edge. A constant column has only dead bins."""
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"quantile_edges: need a non-empty [N, F] matrix, got shape {values.shape}")
    levels = np.linspace(0.0, 1.0, bins + 1)
    quantiles = np.quantile(values.astype(np.float64), levels, axis=0).T  # [F, bins + 1]
    left = np.empty((values.shape[1], bins), np.float64)
    inverse = np.zeros((values.shape[1], bins), np.float64)
    for f, column in enumerate(quantiles):
        edges = np.unique(column)
        n = len(edges) - 1
        left[f, :n] = edges[:-1]
        left[f, n:] = edges[-1]
        inverse[f, :n] = 1.0 / np.diff(edges)
    return left, inverse


class PiecewiseLinearEncoding(nn.Module):
    """``forward(dense [B, F]) -> [B, F * dim]``: each feature's piecewise-linear encoding through
    its own linear map (module docstring), after ``dense`` itself under ``keep_scalar``
    ([B, F + F * dim]). Until :meth:`fit` the edges are the standard normal's
    range cut in ``bins`` equal parts (the dense inputs are standardized), so a fresh model runs."""

    def __init__(self, num_features: int, config: DenseEncodingConfig) -> None:
        super().__init__()
        self.num_features, self.bins, self.dim = num_features, config.bins, config.dim
        self.relu, self.keep_scalar = config.relu, config.keep_scalar
        edges = torch.linspace(-2.0, 2.0, config.bins + 1)
        self.register_buffer("left", edges[:-1].repeat(num_features, 1))  # [F, T]
        self.register_buffer("inverse_width", (1.0 / edges.diff()).repeat(num_features, 1))  # [F, T]
        # nn.Linear's default initialisation, per feature (fan-in T)
        bound = 1.0 / config.bins**0.5
        self.weight = nn.Parameter(torch.empty(num_features, config.bins, config.dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_features, 1, config.dim).uniform_(-bound, bound))

    @property
    def output_dim(self) -> int:
        return self.num_features * (self.dim + int(self.keep_scalar))

    def fit(self, dense: np.ndarray) -> None:
        """Set the edges to the quantiles of ``dense`` [N, F] (the training split's dense inputs)."""
        if dense.ndim != 2 or dense.shape[1] != self.num_features:
            raise ValueError(f"PiecewiseLinearEncoding.fit: expected [N, {self.num_features}], got {dense.shape}")
        left, inverse = quantile_edges(dense, self.bins)
        self.left.copy_(torch.from_numpy(left))
        self.inverse_width.copy_(torch.from_numpy(inverse))

    def encode(self, dense: torch.Tensor) -> torch.Tensor:
        """PLE(x) [B, F, T] (before the linear map)."""
        return ((dense.unsqueeze(-1) - self.left) * self.inverse_width).clamp(0.0, 1.0)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        b = dense.shape[0]
        # features first: F matrix products [B, T] @ [T, dim], one batched MatMul in the graph
        mapped = torch.matmul(self.encode(dense).transpose(0, 1), self.weight) + self.bias  # [F, B, dim]
        if self.relu:
            mapped = torch.relu(mapped)
        encoded = mapped.transpose(0, 1).reshape(b, self.num_features * self.dim)
        return torch.cat([dense, encoded], dim=1) if self.keep_scalar else encoded
