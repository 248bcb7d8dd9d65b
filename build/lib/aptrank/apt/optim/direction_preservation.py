"""APT's direction preservation for Muon (ALGORITHMS.md, our formulation).

Before Newton-Schulz the momentum matrix is normalised and mixed with the unit per-task gradients
of this step, so that a task whose direction the momentum has diluted keeps a share of the
orthogonalised update:

    M' = M / ||M||_F + gamma * mean_k G_k / ||G_k||_F      (tasks with G_k = 0 add nothing)
"""

from __future__ import annotations

import torch
from torch import Tensor


def preserve_directions(m: Tensor, g_tasks: Tensor | None, gamma: float) -> Tensor:
    """M' above for one matrix ``m`` and its per-task gradients ``g_tasks`` [K, *m.shape]."""
    if g_tasks is None:
        raise ValueError("direction preservation needs the per-task gradients (task_grads)")
    k = g_tasks.shape[0]
    out = m / m.norm().clamp(min=1e-30)
    norms = g_tasks.reshape(k, -1).norm(dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))  # zero rows stay zero
    unit = g_tasks / safe.view(-1, *([1] * (g_tasks.ndim - 1)))
    return out + gamma * unit.sum(0) / k
