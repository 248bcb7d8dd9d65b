"""ConicGrad: the best worst-task direction inside a cone around the mean gradient.

Hassanpour et al., "Fantastic Multi-Task Gradient Updates and How to Find Them in a Cone",
arXiv 2502.00217, 2025. The update direction maximises the worst task's first-order improvement
among unit directions within angle arccos(c) of the mean gradient g_0:

    u* = argmax_{u in D} min_k g_k^T u,   D = {u : ||u|| <= 1, u^T g_0 / ||g_0|| >= c},

and the direction is decoupled from the magnitude: d = ||g_0|| u* / ||u*||, written K * d (so
identical task gradients, or c = 1, give EW).

Solved through its dual on the Gram matrix (our derivation; the paper's closed form, via
Sherman-Morrison-Woodbury, was not available to us): min_k g_k^T u = min_{w in simplex} g_w^T u,
and by the minimax theorem u* maximises g_{w*}^T u over D, where w* minimises D's support function
h(g_w) over the simplex. With a = g_w^T g_0 / ||g_0|| and b = ||g_w - a g_0 / ||g_0||||:
h(g_w) = ||g_w|| when g_w lies in the cone (a >= c ||g_w||), else c a + sqrt(1 - c^2) b, and u* is
g_w / ||g_w|| or the cone's rim point c g_0/||g_0|| + sqrt(1 - c^2) (g_w - a g_0/||g_0||) / b.
h is convex and C^1 (its gradient in w is G u), minimised by SLSQP on the K-simplex. Tower weights: 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, ones
from aptrank.apt.solvers import minimize_on_simplex


def in_unit_interval(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
    return None if ok else f"must be a number in (0, 1], got {v!r}"


def cone_direction(m: np.ndarray, w: np.ndarray, c: float) -> tuple[float, float, float]:
    """(h, alpha, beta): D's support function at g_w and its maximiser u = alpha g_w + beta g_0
    (``m`` the Gram matrix, scaled so that ||g_0|| is O(1))."""
    b0 = m.mean(axis=1)  # g_k^T g_0
    n0 = float(np.sqrt(max(b0.mean(), 0.0)))  # ||g_0||
    nv = float(np.sqrt(max(w @ m @ w, 0.0)))  # ||g_w||
    a = float(w @ b0) / n0
    if a >= c * nv:  # g_w inside the cone: u = g_w / ||g_w||
        return nv, (1.0 / nv if nv > 0 else 0.0), (0.0 if nv > 0 else 1.0 / n0)
    s = float(np.sqrt(max(1.0 - c * c, 0.0)))
    perp = float(np.sqrt(max(nv * nv - a * a, 0.0)))
    if perp <= 1e-12 * max(nv, 1.0):  # g_w opposite to g_0: every rim point ties; take the axis
        return c * a, 0.0, c / n0
    return c * a + s * perp, s / perp, (c - s * a / perp) / n0


class ConicGrad(Method):
    name = "conicgrad"
    paper = "Hassanpour et al., arXiv 2502.00217 (2025)"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"c": (0.5, in_unit_interval)}

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        k = self.num_tasks
        scale = float(gram.diagonal().max())
        m = (gram / scale).numpy() if scale > 0 else None
        if m is None or not m.mean() > 1e-24:  # g_0 = 0: no cone to speak of
            return Combination(coef=ones(k), tower_weights=ones(k))
        uniform = np.full(k, 1.0 / k)

        def fun(w: np.ndarray) -> float:
            return cone_direction(m, w, self.c)[0]

        def jac(w: np.ndarray) -> np.ndarray:
            _, alpha, beta = cone_direction(m, w, self.c)
            return m @ (alpha * w + beta * uniform)  # G u

        w = minimize_on_simplex(fun, jac, k) if self.c < 1 else uniform
        _, alpha, beta = cone_direction(m, w, self.c)
        u = alpha * w + beta * uniform  # u = G^T (alpha w + beta 1/K), on the scaled Gram
        n0 = float(np.sqrt(m.mean()))
        nu = float(np.sqrt(max(u @ m @ u, 1e-300)))
        coef = k * n0 * u / nu
        return Combination(coef=torch.from_numpy(coef), tower_weights=ones(k), info={"weights": w.tolist()})
