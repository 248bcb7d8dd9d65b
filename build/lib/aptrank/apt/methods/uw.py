"""UW: uncertainty weighting with learned task log-variances.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry
and Semantics", CVPR 2018. L = sum_k L_k / (2 e^{s_k}) + s_k / 2, s_k learned (init -0.5, as in
LibMTL). The weights w_k = 1 / (2 e^{s_k}) scale both shared and tower gradients; s gets the gradient
of L (computed on the detached losses) and is stepped by the same optimizer (no weight decay).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aptrank.apt.methods.base import Check, Weighting, finite


class UW(Weighting):
    name = "uw"
    paper = "Kendall, Gal & Cipolla, CVPR 2018"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"init": (-0.5, finite)}

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.log_var = nn.Parameter(torch.full((num_tasks,), float(self.init), dtype=torch.float64))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_var]

    def weights(self, losses: Tensor) -> Tensor:
        with torch.enable_grad():
            w = 0.5 * torch.exp(-self.log_var)
            objective = (w * losses.detach().to(w)).sum() + 0.5 * self.log_var.sum()
            self.log_var.grad = torch.autograd.grad(objective, self.log_var)[0]
        return w.detach()
