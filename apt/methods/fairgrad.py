"""FairGrad: alpha-fair allocation of the update between tasks.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (code: OptMN-Lab/fairgrad;
LibMTL's FairGrad). w > 0 solves (G G^T) w = w^{-1/alpha} on the unnormalised Gram matrix (the
stationarity condition of the alpha-fair utility sum_k (g_k^T d)^{1-alpha} / (1 - alpha) over
d = G^T w); the written gradient is K G^T w (the authors' ``newgrad * n_tasks``), clipped to global
norm ``max_norm`` (1.0 as in the authors' code; 0 disables). alpha = 1 is the Nash-MTL condition.
Towers get their own loss's gradient (weights 1), as in the authors' per-task backward passes.

Solver: the authors call scipy's ``least_squares`` on the residual from w = 1/K each step; we solve
the same equation by damped Newton on its convex potential (apt.solvers.alpha_fair_weights), which
has one solution, to a relative residual of 1e-10. No solution exists for Pareto-stationary
gradients; then the previous w is kept (``info["stationary"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, ones, positive
from aptrank.apt.solvers import alpha_fair_weights


class FairGrad(Method):
    name = "fairgrad"
    paper = "Ban & Ji, ICML 2024"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"alpha": (1.0, positive), "max_norm": (1.0, nonneg)}

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.w = np.full(num_tasks, 1.0 / num_tasks)

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        w, converged = alpha_fair_weights(gram.numpy(), 1.0 / self.alpha, self.w)
        if converged:
            self.w = w
        k = self.num_tasks
        coef = torch.from_numpy(k * self.w)
        return Combination(
            coef=coef,
            tower_weights=ones(k),
            max_norm=self.max_norm if self.max_norm > 0 else None,
            info={"weights": self.w.tolist(), "stationary": not converged},
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "w": self.w.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.w = np.asarray(state["w"], dtype=np.float64)
