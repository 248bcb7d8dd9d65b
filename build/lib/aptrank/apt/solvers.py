"""Small K x K solvers the aggregators share (float64 numpy/scipy on the CPU; K is the task count).

Everything here works on the Gram matrix M = G G^T of the task gradients, never on G itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize, nnls


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based; Duchi et al., ICML 2008)."""
    n = v.shape[0]
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, n + 1)
    rho = ind[u - css / ind > 0][-1]
    theta = css[rho - 1] / rho
    return np.maximum(v - theta, 0.0)


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """w = argmin_{w in simplex} w^T M w: the min-norm point G^T w of the gradients' convex hull.

    K = 2: Sener & Koltun's closed form. K > 2: exact, via the reduction
    min_{u >= 0} u^T M u + (1^T u - 1)^2 = min_{s >= 0, w in simplex} s^2 w^T M w + (s - 1)^2, whose
    w-part is monotone in w^T M w, so w = u*/1^T u*; that is a non-negative least-squares problem
    (Lawson-Hanson active set, finite and exact) on [M^{1/2}; 1^T] u ~ [0; 1].
    """
    k = gram.shape[0]
    if k == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(gram)))
    if not scale > 0:
        return np.full(k, 1.0 / k)
    m = gram / scale
    if k == 2:
        denom = m[0, 0] + m[1, 1] - 2 * m[0, 1]
        gamma = 0.5 if denom <= 0 else float(np.clip((m[1, 1] - m[0, 1]) / denom, 0.0, 1.0))
        return np.array([gamma, 1.0 - gamma])
    evals, evecs = np.linalg.eigh((m + m.T) / 2)
    root = np.sqrt(np.clip(evals, 0.0, None))[:, None] * evecs.T  # root^T root = M
    a = np.vstack([root, np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    u, _ = nnls(a, b, maxiter=50 * k)
    return u / u.sum()


def minimize_on_simplex(
    fun: Callable[[np.ndarray], float],
    jac: Callable[[np.ndarray], np.ndarray],
    k: int,
    x0: np.ndarray | None = None,
) -> np.ndarray:
    """argmin of a smooth convex function over the simplex (SLSQP with analytic gradient, tight
    tolerance; the authors of CAGrad/IMGrad use scipy's SLSQP on the same problems)."""
    x0 = np.full(k, 1.0 / k) if x0 is None else x0
    res = minimize(
        fun,
        x0,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=({"type": "eq", "fun": lambda x: 1.0 - x.sum(), "jac": lambda x: -np.ones_like(x)},),
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return project_simplex(res.x)
