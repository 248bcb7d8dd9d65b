"""CAGrad: conflict-averse gradient descent.

Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021 (code:
Cranial-XIX/CAGrad). c = alpha ||g_0||, w = argmin_{w in simplex} g_w^T g_0 + c ||g_w||
(g_w = G^T w), d = (g_0 + (c / ||g_w||) g_w) / (1 + alpha^2) (``rescale`` 1, the paper's choice;
0: no division, 2: / (1 + alpha)). Written: K * d. Tower weights: 1.
With alpha = 0, d = g_0 (EW). Identical task gradients (or K = 1) give
g (1 + alpha) / (1 + alpha^2) with rescale 1, exactly g with rescale 2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, one_of, ones
from aptrank.apt.solvers import minimize_on_simplex


def conflict_averse(gram: Tensor, alpha: float, rescale: int, cos_weight: float | None = None) -> Tensor:
    """Sum-scale coefficients of CAGrad (``cos_weight`` None) or IMGrad (``cos_weight`` = s, the
    objective (1.5 - s) g_w^T g_0 + s c ||g_w||)."""
    k = gram.shape[0]
    scale = float(gram.diagonal().max())
    if not scale > 0:
        return ones(k)
    m = (gram / scale).numpy()
    b = m.mean(axis=1)  # M 1/K: g_w^T g_0 = w^T b
    c = alpha * float(np.sqrt(max(m.mean(), 0.0)))
    lin, quad = (1.0, 1.0) if cos_weight is None else (1.5 - cos_weight, cos_weight)

    def fun(w: np.ndarray) -> float:
        return lin * float(w @ b) + quad * c * float(np.sqrt(max(w @ m @ w, 0.0)))

    def jac(w: np.ndarray) -> np.ndarray:
        gw = float(np.sqrt(max(w @ m @ w, 1e-30)))
        return lin * b + quad * c * (m @ w) / gw

    w = minimize_on_simplex(fun, jac, k) if c > 0 else np.full(k, 1.0 / k)
    gw_norm = float(np.sqrt(max(w @ m @ w, 0.0)))
    lam = c / gw_norm if gw_norm > 1e-12 else 0.0
    a = 1.0 / k + lam * w
    a /= {0: 1.0, 1: 1.0 + alpha**2, 2: 1.0 + alpha}[rescale]
    return torch.from_numpy(k * a)


class CAGrad(Method):
    name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"alpha": (0.5, nonneg), "rescale": (1, one_of(0, 1, 2))}

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        coef = conflict_averse(gram, self.alpha, self.rescale)
        return Combination(coef=coef, tower_weights=ones(self.num_tasks), info={"weights": coef.tolist()})
