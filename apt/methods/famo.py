"""FAMO: fast adaptive multitask optimization (one backward per step, no per-task gradients).

Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023 (code: Cranial-XIX/FAMO).
Task logits xi (init 0), z = softmax(xi); the step trains sum_k z_k log(L_k + eps) / c with
c = sum_k z_k / (L_k + eps), i.e. loss weights w_k = z_k / (c (L_k + eps)) (sum 1; written K w so
that equal logits and equal losses give EW). xi is updated from the observed decrease of the log
losses: delta_k = log(L_k^prev + eps) - log(L_k^now + eps), xi.grad = J_softmax(xi)^T delta, one
Adam step (lr ``w_lr`` 0.025, L2 weight decay ``gamma`` 1e-5, the FAMO class defaults of the
authors' code as vendored in OptMN-Lab/fairgrad).

Deviation: the authors re-run the forward pass on the same batch after the parameter update to get
L^now (a second forward per step); apt takes L^now from the next step's batch (no extra forward),
so xi lags one step and sees batch noise. ``min_losses`` (the authors' optional lower bounds) are 0.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aptrank.apt.methods.base import Check, Weighting, nonneg, positive


class FAMO(Weighting):
    name = "famo"
    paper = "Liu et al., NeurIPS 2023"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {
        "w_lr": (0.025, positive),
        "gamma": (1e-5, nonneg),
        "eps": (1e-8, positive),
    }

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.logits = nn.Parameter(torch.zeros(num_tasks, dtype=torch.float64))
        self.logit_opt = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self.prev_losses: Tensor | None = None

    def weights(self, losses: Tensor) -> Tensor:
        log_now = (losses + self.eps).log()
        if self.prev_losses is not None:
            delta = (self.prev_losses + self.eps).log() - log_now
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(torch.softmax(self.logits, -1), self.logits, grad_outputs=delta)
            self.logit_opt.zero_grad()
            self.logits.grad = grad
            self.logit_opt.step()
        self.prev_losses = losses.clone()
        z = torch.softmax(self.logits.detach(), -1)
        inv = z / (losses + self.eps)
        return self.num_tasks * inv / inv.sum()

    def state_dict(self) -> dict[str, Any]:
        prev = None if self.prev_losses is None else self.prev_losses.tolist()
        return {
            **super().state_dict(),
            "logits": self.logits.detach().clone(),
            "logit_opt": copy.deepcopy(self.logit_opt.state_dict()),  # a snapshot, not live moments
            "prev_losses": prev,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.logit_opt.load_state_dict(copy.deepcopy(state["logit_opt"]))
        prev = state["prev_losses"]
        self.prev_losses = None if prev is None else torch.tensor(prev, dtype=torch.float64)
