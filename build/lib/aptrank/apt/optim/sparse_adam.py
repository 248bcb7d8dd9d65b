"""Row-wise lazy AdamW for sparse gradients (embedding tables).

The dense AdamW arithmetic (Loshchilov & Hutter, ICLR 2019; ``torch.optim.AdamW``'s single-tensor
path) applied to the rows present in the gradient only: untouched rows keep their weights and
moments, like ``torch.optim.SparseAdam`` plus decoupled weight decay on the touched rows. The step
count (bias correction) is per table.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def update(p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
    """One row-wise AdamW step from the sparse ``p.grad`` (state: step, exp_avg, exp_avg_sq)."""
    grad = p.grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    state["step"] += 1
    step = state["step"]
    exp_avg = state["exp_avg"].index_select(0, rows)
    exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
    param = p.index_select(0, rows)
    if wd != 0:
        param.mul_(1 - lr * wd)
    exp_avg.lerp_(values, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    p.index_copy_(0, rows, param)
