"""APT's adaptive momentum coefficient (ALGORITHMS.md, our formulation).

Per tensor (per task for AdaTask's per-task moments), with m the momentum before this step and d
the new direction (gradient, or task k's contribution u_k):

    s_t = cos(m_{t-1}, d_t),    beta_t = beta_min + (beta_max - beta_min) (1 + s_t) / 2

so a direction that agrees with the momentum keeps a long memory and one that disagrees gets a
larger share of the update (s_t = 0 while m_{t-1} = 0). Adam's bias correction then uses the running
product of the beta_t (:func:`beta_product`). Every cosine of a step is read back in one sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def adaptive_betas(pairs: Sequence[tuple[Tensor, Tensor, float, float]]) -> list[list[float]]:
    """beta_t per row for each (m [n, ...], d [n, ...], beta_min, beta_max): n betas per pair."""
    if not pairs:
        return []
    rows = []
    for m, d, _, _ in pairs:
        mf, df = m.reshape(m.shape[0], -1).float(), d.reshape(d.shape[0], -1).float()
        rows.append(torch.stack([(mf * df).sum(1), mf.norm(dim=1), df.norm(dim=1)], dim=1))
    stats = iter(torch.cat([r.cpu() for r in rows]).tolist())
    out = []
    for m, _, lo, hi in pairs:
        betas = []
        for _ in range(m.shape[0]):
            dot, nm, nd = next(stats)
            s = dot / (nm * nd) if nm > 0 and nd > 0 else 0.0
            s = min(1.0, max(-1.0, s))
            betas.append(lo + (hi - lo) * (1.0 + s) / 2.0)
        out.append(betas)
    return out


def beta_product(state: dict[str, Any], beta: float, step: int, index: int | None) -> float:
    """prod_{tau <= t} beta_tau, updated in ``state`` with this step's beta (``index``: the task for
    per-task moments). Computed as beta**t while beta_t has been constant, so beta_min = beta_max
    gives exactly the base optimizer's bias correction."""
    prods, consts = state["beta1_prod"], state["beta1_const"]
    prod = (prods if index is None else prods[index]) * beta
    const = consts if index is None else consts[index]
    const = beta if step == 1 or const == beta else None
    if index is None:
        state["beta1_prod"], state["beta1_const"] = prod, const
    else:
        prods[index], consts[index] = prod, const
    return beta**step if const is not None else prod
