"""GradNorm: learn loss weights that balance the tasks' gradient norms.

Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", ICML 2018 (as in LibMTL). w = K softmax(s). From the second epoch on (after the first
``end_epoch``, whose mean losses are L_k(0)): with G_k = ||w_k g_k||, Lt_k = L_k / L_k(0) and
r_k = Lt_k / mean(Lt), s gets the gradient of sum_k |G_k - mean_j(G_j) r_k^alpha| (the target held
constant); the written gradient is sum_k w_k g_k and the towers get sum_k w_k L_k. In the first epoch
w = 1 (no Gram needed). alpha = 1.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aptrank.apt.methods.base import Check, Combination, Method, nonneg


class GradNorm(Method):
    name = "gradnorm"
    paper = "Chen et al., ICML 2018"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"alpha": (1.5, nonneg)}

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.scale = nn.Parameter(torch.zeros(num_tasks, dtype=torch.float64))
        self.initial_losses: list[float] | None = None

    def parameters(self) -> list[nn.Parameter]:
        return [self.scale]

    def needs_gram(self) -> bool:
        return self.initial_losses is not None

    def end_epoch(self, mean_task_losses: Sequence[float]) -> None:
        super().end_epoch(mean_task_losses)
        if self.initial_losses is None:
            self.initial_losses = [float(x) for x in mean_task_losses]

    def combine(self, gram: Tensor | None, losses: Tensor) -> Combination:
        k = self.num_tasks
        with torch.enable_grad():
            w = k * torch.softmax(self.scale, dim=0)
            if gram is not None and self.initial_losses is not None:
                norms = w * gram.diagonal().clamp(min=0).sqrt()
                ratio = losses / torch.tensor(self.initial_losses, dtype=torch.float64)
                r = ratio / ratio.mean()
                target = (norms.mean() * r**self.alpha).detach()
                objective = (norms - target).abs().sum()
                self.scale.grad = torch.autograd.grad(objective, self.scale)[0]
        w = w.detach()
        return Combination(coef=w, tower_weights=w, info={"weights": w.tolist()})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial_losses": self.initial_losses}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.initial_losses = state["initial_losses"]
