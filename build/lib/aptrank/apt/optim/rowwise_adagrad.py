"""Row-wise Adagrad for embedding tables (one accumulator per row).

Adagrad: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization", JMLR 2011. The row-wise variant keeps a single second-moment accumulator per table
row (the mean of the row's squared gradient), as FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` does for
TorchRec's fused tables (gradients of duplicate ids summed first):

    s_r <- s_r + mean_j(g_rj^2);    w_r <- w_r - lr * g_r / (sqrt(s_r) + eps)

Single-process runs can use it so that they update tables exactly like a TorchRec-sharded run
(whose CPU fused kernels offer no Adam). Memory: one float per row instead of Adam's two per entry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def init_state(p: Tensor, state: dict[str, Any]) -> None:
    state["step"] = 0
    state["sum_sq"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)


def update(p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
    """One row-wise Adagrad step from ``p.grad`` (sparse: touched rows only; dense: rows with a
    non-zero gradient, which is the same set)."""
    grad = p.grad
    if grad.is_sparse:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    else:
        rows = grad.reshape(grad.shape[0], -1).abs().sum(dim=1).nonzero().squeeze(1)
        values = grad.index_select(0, rows)
    state["step"] += 1
    lr, eps = group["lr"], group["eps"]
    flat = values.reshape(values.shape[0], -1).float()
    sum_sq = state["sum_sq"].index_select(0, rows) + flat.pow(2).mean(dim=1)
    state["sum_sq"].index_copy_(0, rows, sum_sq)
    scale = (lr / (sum_sq.sqrt() + eps)).to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    p.index_add_(0, rows, -scale * values)
