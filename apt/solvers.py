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
    a = np.vstack([matrix_root(m), np.ones((1, k))])
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


def matrix_root(gram: np.ndarray) -> np.ndarray:
    """R with R^T R = M (symmetric eigendecomposition; tiny negative eigenvalues from rounding set to 0)."""
    evals, evecs = np.linalg.eigh((gram + gram.T) / 2)
    return np.sqrt(np.clip(evals, 0.0, None))[:, None] * evecs.T


def dual_cone_weights(gram: np.ndarray, u: np.ndarray) -> np.ndarray:
    """v = argmin_{v >= u} v^T M v: the weights of the projection of G^T u onto the dual cone
    {x : G x >= 0} of the task gradients (Quinton & Rey, "Jacobian Descent for Multi-Objective
    Optimization", 2024, Prop. 1; TorchJD's ``project_weights``). Exact: with v = u + l, l >= 0 it is
    the non-negative least-squares problem min ||R l + R u|| (Lawson-Hanson active set)."""
    root = matrix_root(gram)
    lam, _ = nnls(root, -root @ u, maxiter=50 * gram.shape[0])
    return u + lam


#: on the normalised Gram matrix a weight above this means the iterates run off (Pareto-stationary)
MAX_FAIR_WEIGHT = 1e6


def alpha_fair_weights(
    gram: np.ndarray, power: float, w0: np.ndarray, max_iter: int = 100, tol: float = 1e-10
) -> tuple[np.ndarray, bool]:
    """w > 0 with M w = w^{-power} (elementwise): Nash-MTL (power 1, Navon et al. 2022) and FairGrad
    (power 1/alpha, Ban & Ji 2024). Returns (w, converged).

    The equation is the stationarity condition of the strictly convex potential
    f(w) = 1/2 w^T M w - sum_k phi(w_k), phi' = w^{-power} (phi = log for power 1), so it has at
    most one solution, found by damped Newton steps (quadratic convergence, warm started from w0),
    on M' = M / ||M||_F and rescaled: w = w' ||M||_F^{-1/(1+power)}. It has none when the task
    gradients are Pareto-stationary (a convex combination vanishes): then w runs off to infinity and
    ``converged`` is False; the caller decides (see NashMTL).
    """
    norm = float(np.linalg.norm(gram))
    k = gram.shape[0]
    if not norm > 0:
        return np.ones(k), False
    m = gram / norm
    scale = norm ** (-1.0 / (1.0 + power))
    w = np.clip(np.asarray(w0, dtype=np.float64) / scale, 1e-12, None)

    def phi(a: np.ndarray) -> float:
        return float(np.log(a).sum()) if power == 1 else float((a ** (1 - power)).sum() / (1 - power))

    def potential(a: np.ndarray) -> float:
        return 0.5 * float(a @ m @ a) - phi(a)

    converged = False
    for _ in range(max_iter):
        if float(w.max()) > MAX_FAIR_WEIGHT:  # running off: (near) Pareto-stationary
            break
        grad = m @ w - w**-power
        if np.linalg.norm(grad) < tol * max(1.0, float(np.linalg.norm(w**-power))):
            converged = True
            break
        step = -np.linalg.solve(m + np.diag(power * w ** (-power - 1)), grad)
        t, f0, slope = 1.0, potential(w), float(grad @ step)
        gnorm = float(np.linalg.norm(grad))
        while t > 1e-12:
            cand = w + t * step
            # Armijo on the potential, or (near the solution, where f's rounding hides the decrease)
            # a residual that shrinks
            if np.all(cand > 0) and (
                potential(cand) <= f0 + 1e-4 * t * slope or np.linalg.norm(m @ cand - cand**-power) < 0.5 * gnorm
            ):
                break
            t *= 0.5
        else:
            break
        w = cand
    return w * scale, converged
