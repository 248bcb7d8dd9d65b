"""Nash-MTL: the Nash bargaining solution between tasks.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (code: AvivNavon/nash-mtl).
alpha > 0 solves the paper's condition (G G^T) alpha = 1 / alpha on the unnormalised Gram matrix
(the authors normalise G G^T by its Frobenius norm inside their CCP solver and multiply the factor
back in its constraints, so their alpha solves the same equation; at the solution
||G^T alpha||^2 = sum_k alpha_k (G G^T alpha)_k = K). The written gradient is G^T alpha, clipped to
global norm ``max_norm`` (1.0; 0 disables) like the authors' ``clip_grad_norm_``; towers get the
gradient of sum_k alpha_k L_k (as in the authors' code). alpha is recomputed every
``update_weights_every`` steps and reused in between (no Gram needed then).

Solver: the authors run up to 20 convex-concave (CCP) iterations in cvxpy/ECOS and stop at a
residual ||G G^T alpha - 1/alpha|| < 1e-3. We solve the same equation by damped Newton on its
strictly convex potential (apt.solvers.alpha_fair_weights; at most ``optim_niter`` steps, warm
started from the previous alpha), which converges quadratically to a relative residual of 1e-10:
tighter than CCP for the same K x K work, so we keep it. Pareto-stationary gradients (a convex
combination of them vanishes) have no solution: the iterates run off to infinity. Then, as the
authors' code does when its solver fails, the previous alpha is kept (``info["stationary"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, pos_int
from aptrank.apt.solvers import alpha_fair_weights


class NashMTL(Method):
    name = "nash_mtl"
    paper = "Navon et al., ICML 2022"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {
        "max_norm": (1.0, nonneg),
        "update_weights_every": (1, pos_int),
        "optim_niter": (50, pos_int),
    }

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.alpha = np.ones(num_tasks)
        self.calls = 0

    def needs_gram(self) -> bool:
        return self.calls % self.update_weights_every == 0

    def combine(self, gram: Tensor | None, losses: Tensor) -> Combination:
        info: dict[str, Any] = {}
        if gram is not None and self.calls % self.update_weights_every == 0:
            alpha, converged = alpha_fair_weights(gram.numpy(), 1.0, self.alpha, max_iter=self.optim_niter)
            info["stationary"] = not converged
            if converged:
                self.alpha = alpha
        self.calls += 1
        a = torch.from_numpy(self.alpha.copy())
        return Combination(
            coef=a,
            tower_weights=a,
            max_norm=self.max_norm if self.max_norm > 0 else None,
            info={"weights": a.tolist(), **info},
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": self.alpha.tolist(), "calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.alpha = np.asarray(state["alpha"], dtype=np.float64)
        self.calls = state["calls"]
