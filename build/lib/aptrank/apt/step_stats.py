"""Per-step helpers of :class:`apt.engine.MultiTaskOptimizer`: gradient clipping by global norm and
the logged step metrics (per-task loss, combination weight, gradient norms and cosines)."""

from __future__ import annotations

import torch
from torch import Tensor

from aptrank.apt.methods.base import Combination, clip_factor


def clip_gradients(grads: list[Tensor], max_norm: float) -> float:
    """Scale ``grads`` in place to global L2 norm <= ``max_norm`` (dense or sparse; Nash-MTL's
    clipping, Navon et al., ICML 2022); returns the factor applied (1.0 when none)."""
    if not grads:
        return 1.0
    sq = torch.stack([(g.coalesce().values() if g.is_sparse else g).float().pow(2).sum() for g in grads])
    factor = clip_factor(float(sq.sum().sqrt()), max_norm)
    if factor < 1.0:
        for g in grads:
            g.mul_(factor)
    return factor


def step_metrics(
    task_names: list[str], loss_values: Tensor, comb: Combination, gram_matrix: Tensor | None
) -> dict[str, float]:
    """``loss/<task>``, ``weight/<task>`` and, given the Gram matrix of the per-task gradients,
    ``grad_norm/<task>`` and ``grad_cos/<a>_<b>`` for every task pair."""
    out: dict[str, float] = {}
    for k, name in enumerate(task_names):
        out[f"loss/{name}"] = float(loss_values[k])
        out[f"weight/{name}"] = float(comb.coef[k])
    if gram_matrix is not None:
        norms = gram_matrix.diagonal().clamp(min=0).sqrt()
        for k, name in enumerate(task_names):
            out[f"grad_norm/{name}"] = float(norms[k])
        for i in range(len(task_names)):
            for j in range(i + 1, len(task_names)):
                denom = float(norms[i] * norms[j])
                cos = float(gram_matrix[i, j]) / denom if denom > 0 else 0.0
                out[f"grad_cos/{task_names[i]}_{task_names[j]}"] = cos
    return out
