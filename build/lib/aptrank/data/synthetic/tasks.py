"""Task geometry of the latent world: correlated task directions and calibrated label logits.

Each task k in (click, like, finish) has a unit direction d_k in the latent factor space and the
affinity of user u for item i on task k is a_k = sum_f u_f v_f d_kf, so corr(a_j, a_k) = d_j . d_k
for unit-variance independent factor products. The directions are built from an orthonormal basis
(e1, e2, e3) so that their Gram matrix is exactly the requested task correlation matrix:

    d_click  = e1
    d_finish = rho e1 + sqrt(1 - rho^2) e2                       (cos(click, finish) = rho)
    d_like   = alpha (d_click + d_finish) / 2 + sqrt(1 - alpha^2 (1 + rho) / 2) e3

(like follows the mean engagement direction with weight alpha, so corr(like, click) =
corr(like, finish) = alpha (1 + rho) / 2; for rho = -1 it is orthogonal to both). User, item and
tab offsets are drawn with the same correlation, so the population correlation of the click and
finish logits is exactly rho: the dial for task conflict used by multi-task studies (the synthetic
data of Ma et al., MMoE, KDD 2018, controls task relatedness by the cosine of two task weight
vectors in the same way).
Per-task intercepts are calibrated by bisection so that the mean probability over the event
distribution equals the target label rate.
"""

from __future__ import annotations

import numpy as np

TASKS: tuple[str, ...] = ("click", "like", "finish")
K = len(TASKS)

# share of the latent variance from the user x item affinity, the user offset, the item offset
VARIANCE_SHARES = np.array([0.6, 0.2, 0.2])
TAB_SCALE = 0.3


def task_basis(rho: float, alpha: float) -> np.ndarray:
    """3x3 lower-triangular L whose rows are the task directions in an orthonormal basis
    (row order = :data:`TASKS`); L @ L.T is the task correlation matrix."""
    tail = 1.0 - alpha**2 * (1.0 + rho) / 2.0
    finish = np.array([rho, np.sqrt(max(1.0 - rho**2, 0.0)), 0.0])
    click = np.array([1.0, 0.0, 0.0])
    like = alpha * (click + finish) / 2.0 + np.array([0.0, 0.0, np.sqrt(max(tail, 0.0))])
    return np.stack([click, like, finish])


def correlation_matrix(rho: float, alpha: float) -> np.ndarray:
    """The population correlation of the task logits (click, like, finish)."""
    basis = task_basis(rho, alpha)
    return np.einsum("kf,jf->kj", basis, basis)


def task_directions(rng: np.random.Generator, rho: float, alpha: float, factors: int) -> np.ndarray:
    """K x F unit task directions in the latent space: the basis rotated onto a random orthonormal
    3-frame of R^F."""
    frame, _ = np.linalg.qr(rng.standard_normal((factors, K)))
    return np.einsum("kb,fb->kf", task_basis(rho, alpha), frame).astype(np.float32)


def correlated_offsets(rng: np.random.Generator, n: int, basis: np.ndarray) -> np.ndarray:
    """n x K standard-normal offsets whose task correlation is basis @ basis.T."""
    return np.einsum("nb,kb->nk", rng.standard_normal((n, K)), basis).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_intercepts(scores: np.ndarray, targets: np.ndarray, iters: int = 60) -> np.ndarray:
    """Intercepts b (K,) with mean(sigmoid(b_k + scores[:, k])) = targets[k], by bisection (the
    mean is increasing in b_k) on [-30, 30]; 60 halvings reach float64 resolution."""
    lo = np.full(scores.shape[1], -30.0)
    hi = np.full(scores.shape[1], 30.0)
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        above = sigmoid(mid + scores).mean(axis=0) > targets
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return (lo + hi) / 2.0
