"""Nash-MTL: the Nash bargaining solution between tasks.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (code: AvivNavon/nash-mtl).
On the normalised Gram matrix M' = G G^T / ||G G^T||_F solve M' alpha = 1 / alpha, alpha > 0;
d = G^T alpha is the written gradient (identical gradients give alpha = 1: EW), clipped to global
norm ``max_norm`` (1.0; 0 disables) like the authors' clip_grad_norm_. Towers get the gradient of
sum_k alpha_k L_k (as in the authors' code). alpha is recomputed every ``update_weights_every``
steps and reused in between (no Gram needed then).

Solver: the paper approximates the fixed point with up to 20 convex-concave (CCP) iterations in
cvxpy. We solve the same stationarity condition exactly: M' alpha = 1/alpha is the gradient of the
strictly convex potential f(alpha) = 1/2 alpha^T M' alpha - sum_k log alpha_k, minimised by damped
Newton steps (at most ``optim_niter``, default 50; warm started from the previous alpha), to a
residual ||M' alpha - 1/alpha|| below 1e-10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, pos_int


def nash_weights(m: np.ndarray, alpha0: np.ndarray, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """alpha > 0 with m alpha = 1 / alpha (Newton on the convex potential; see module doc)."""
    alpha = alpha0.astype(np.float64).copy()

    def potential(a: np.ndarray) -> float:
        return 0.5 * float(a @ m @ a) - float(np.log(a).sum())

    for _ in range(max_iter):
        grad = m @ alpha - 1.0 / alpha
        if np.linalg.norm(grad) < tol:
            break
        hess = m + np.diag(1.0 / alpha**2)
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:  # (near) Pareto-stationary: alpha runs off; keep the last one
            break
        if not np.all(np.isfinite(step)):
            break
        t, f0, slope = 1.0, potential(alpha), float(grad @ step)
        while True:
            cand = alpha + t * step
            if np.all(cand > 0) and potential(cand) <= f0 + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-12:
                cand = alpha
                break
        alpha = cand
    return alpha


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
        if gram is not None and self.calls % self.update_weights_every == 0:
            norm = float(torch.linalg.matrix_norm(gram))
            if norm > 0:
                self.alpha = nash_weights(gram.numpy() / norm, self.alpha, max_iter=self.optim_niter)
        self.calls += 1
        a = torch.from_numpy(self.alpha.copy())
        return Combination(
            coef=a,
            tower_weights=a,
            max_norm=self.max_norm if self.max_norm > 0 else None,
            info={"weights": a.tolist()},
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": self.alpha.tolist(), "calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.alpha = np.asarray(state["alpha"], dtype=np.float64)
        self.calls = state["calls"]
