"""Aggregators: properties and agreement with independent references written here from the papers.

Every reference below is plain numpy/scipy on the gradient matrix G [K, n] (never on the Gram
matrix the library works with), following the papers and the authors' public code (LibMTL,
Cranial-XIX/CAGrad, zzpustc/IMGrad, ml-opt-lab/sdmgrad, AvivNavon/nash-mtl, SamsungLabs/MTL).
The written shared gradient is K * d (ALGORITHMS.md), so EW writes sum_k g_k.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import fsolve, minimize

from aptrank.apt import AGGREGATORS, METHODS

# Defaults under which identical task gradients (and K = 1) give exactly EW. CAGrad / IMGrad with
# their default rescale 1 give (1 + alpha) / (1 + alpha^2) times EW there (tested separately);
# rescale 2 divides by (1 + alpha) instead. UPGrad's and DB-MTL's epsilons (TorchJD's, LibMTL's) are
# set to 0 here. Nash-MTL and FairGrad solve M w = w^(-1/alpha) on the unnormalised Gram matrix, so
# their output does not scale with G (tested separately, ALPHA_FAIR).
EXACT_EW = {
    "cagrad": {"rescale": 2},
    "imgrad": {"rescale": 2},
    "nash_mtl": {"max_norm": 0.0},
    "fairgrad": {"max_norm": 0.0},
    "upgrad": {"norm_eps": 0.0, "reg_eps": 0.0},
    "db_mtl": {"eps": 0.0},
}
ALPHA_FAIR = ("nash_mtl", "fairgrad")
SCALED = [a for a in AGGREGATORS if a not in ALPHA_FAIR]


def method(name: str, k: int, **kw):
    return METHODS[name](k, generator=torch.Generator().manual_seed(0), **kw)


def written(name: str, g: np.ndarray, losses: np.ndarray | None = None, **kw) -> np.ndarray:
    m = method(name, g.shape[0], **kw)
    lt = None if losses is None else torch.from_numpy(losses)
    return m.apply(torch.from_numpy(g), lt).numpy()


def fixed_grads(k: int, n: int = 7, seed: int = 0) -> np.ndarray:
    """Random task gradients with some conflict (the last task partly opposes the first)."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(k, n))
    g[-1] -= 0.8 * g[0]
    return g


# ---- properties --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCALED)
def test_identical_gradients_give_ew(name: str) -> None:
    g = np.random.default_rng(1).normal(size=9)
    grads = np.stack([g, g, g])
    np.testing.assert_allclose(written(name, grads, **EXACT_EW.get(name, {})), 3 * g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", SCALED)
def test_single_task_gives_plain_gradient(name: str) -> None:
    g = np.random.default_rng(2).normal(size=(1, 9))
    np.testing.assert_allclose(written(name, g, **EXACT_EW.get(name, {})), g[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["cagrad", "imgrad"])
@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.8])
def test_conflict_averse_defaults_scale_ew_by_known_factor(name: str, alpha: float) -> None:
    """Default rescale 1: d = (g + alpha g) / (1 + alpha^2) when every task gradient is g."""
    g = np.random.default_rng(3).normal(size=6)
    expected = 3 * g * (1 + alpha) / (1 + alpha**2)
    np.testing.assert_allclose(written(name, np.stack([g, g, g]), alpha=alpha), expected, rtol=1e-9)
    np.testing.assert_allclose(written(name, g[None], alpha=alpha), g * (1 + alpha) / (1 + alpha**2), rtol=1e-9)


@pytest.mark.parametrize("name", ALPHA_FAIR)
@pytest.mark.parametrize("k", [1, 3])
def test_alpha_fair_methods_on_identical_gradients(name: str, k: int) -> None:
    """M w = 1/w with M = ||g||^2 1 1^T: w_k = 1 / (sqrt(K) ||g||), so G^T w = sqrt(K) g / ||g||
    (Nash-MTL writes G^T alpha, FairGrad K G^T w); clipped to norm 1 by default."""
    g = np.random.default_rng(1).normal(size=9)
    unit = g / np.linalg.norm(g)
    expected = (k if name == "fairgrad" else 1) * np.sqrt(k) * unit
    np.testing.assert_allclose(written(name, np.stack([g] * k), max_norm=0.0), expected, rtol=1e-9)
    norm = np.linalg.norm(expected)
    np.testing.assert_allclose(written(name, np.stack([g] * k)), expected * min(1, 1 / (norm + 1e-6)), rtol=1e-9)


@pytest.mark.parametrize("name", ALPHA_FAIR)
def test_alpha_fair_methods_are_scale_invariant(name: str) -> None:
    g = fixed_grads(3)
    for s in (1e-3, 10.0):
        np.testing.assert_allclose(written(name, s * g, max_norm=0.0), written(name, g, max_norm=0.0), rtol=1e-8)


def test_pcgrad_leaves_no_negative_inner_product_for_two_tasks() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        g = rng.normal(size=(2, 5))
        m = method("pcgrad", 2)
        gt = torch.from_numpy(g)
        comb = m.combine(gt @ gt.T, torch.ones(2, dtype=torch.float64))
        projected = (comb.task_mix() @ gt).numpy()  # g_i' for each task
        assert projected[0] @ g[1] >= -1e-10
        assert projected[1] @ g[0] >= -1e-10
        np.testing.assert_allclose(projected.sum(0), m.apply(gt).numpy(), atol=1e-12)


def simplex_grid(k: int, steps: int) -> np.ndarray:
    """All w on the simplex with coordinates in multiples of 1/steps."""
    if k == 2:
        t = np.linspace(0, 1, steps + 1)
        return np.stack([t, 1 - t], axis=1)
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    a, b = i[keep] / steps, j[keep] / steps
    return np.stack([a, b, 1 - a - b], axis=1)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_mgda_is_the_min_norm_point_of_the_convex_hull(k: int, seed: int) -> None:
    g = fixed_grads(k, n=4, seed=seed)
    d = written("mgda", g) / k  # the written gradient is K d
    grid = simplex_grid(k, 2000 if k == 2 else 600)
    points = grid @ g
    norms = (points**2).sum(1)
    best = int(np.argmin(norms))
    # no point of the hull (on the grid) is shorter, and the grid's best point is the same point
    assert d @ d <= norms[best] + 1e-12
    assert np.linalg.norm(d - points[best]) < 5e-3 * max(1.0, np.linalg.norm(g, axis=1).max())


def test_cagrad_with_zero_c_is_ew() -> None:
    g = fixed_grads(3)
    np.testing.assert_allclose(written("cagrad", g, alpha=0.0), g.sum(0), rtol=1e-12)


# ---- independent references --------------------------------------------------------------------
def ref_simplex_min(f, k: int) -> np.ndarray:
    """argmin of a convex f over the simplex: SLSQP from several starts (numeric gradients)."""
    cons = ({"type": "eq", "fun": lambda w: w.sum() - 1.0},)
    best = None
    starts = [np.full(k, 1.0 / k)] + [np.eye(k)[i] * 0.9 + 0.1 / k for i in range(k)]
    for x0 in starts:
        r = minimize(
            f, x0, method="SLSQP", bounds=[(0, 1)] * k, constraints=cons, options={"ftol": 1e-16, "maxiter": 2000}
        )
        if best is None or r.fun < best.fun:
            best = r
    return np.clip(best.x, 0, None) / np.clip(best.x, 0, None).sum()


def ref_mgda(g: np.ndarray, losses: np.ndarray, normalization: str) -> np.ndarray:
    norms = np.linalg.norm(g, axis=1)
    gn = {"none": np.ones(len(g)), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    gs = g / gn[:, None]
    w = ref_simplex_min(lambda w: float(np.sum((w @ gs) ** 2)), len(g))
    return len(g) * (w @ gs)


def ref_pcgrad(g: np.ndarray, orders: list[list[int]]) -> np.ndarray:
    out = []
    for i, order in enumerate(orders):
        gi = g[i].copy()
        for j in order:
            dot = gi @ g[j]
            if dot < 0:
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.sum(out, axis=0)


def ref_conflict_averse(g: np.ndarray, alpha: float, imbalance: bool) -> np.ndarray:
    k = len(g)
    g0 = g.mean(0)
    c = alpha * np.linalg.norm(g0)
    s = 0.0
    if imbalance:  # IMGrad: s = cos(g_0, g_m), g_m the MGDA (min-norm) direction
        gm = ref_mgda(g, np.ones(k), "none") / k
        s = g0 @ gm / (np.linalg.norm(g0) * np.linalg.norm(gm))

    def objective(w: np.ndarray) -> float:
        gw = w @ g
        if imbalance:
            return (1.5 - s) * gw @ g0 + s * c * np.linalg.norm(gw)
        return gw @ g0 + c * np.linalg.norm(gw)

    w = ref_simplex_min(objective, k)
    gw = w @ g
    d = (g0 + c / np.linalg.norm(gw) * gw) / (1 + alpha**2)
    return k * d


def ref_nash(g: np.ndarray, max_norm: float) -> np.ndarray:
    gg = g @ g.T  # the paper's condition on the unnormalised Gram matrix: fsolve on M / ||M||_F from
    norm = np.linalg.norm(gg)  # ones (well scaled), then alpha = alpha' / sqrt(||M||_F)
    alpha = fsolve(lambda a: gg / norm @ a - 1.0 / a, np.ones(len(g)), xtol=1e-13) / np.sqrt(norm)
    assert np.all(alpha > 0)
    np.testing.assert_allclose(gg @ alpha, 1.0 / alpha, rtol=1e-8)
    d = alpha @ g
    if max_norm > 0:
        d = d * min(1.0, max_norm / (np.linalg.norm(d) + 1e-6))
    return d


def ref_sdmgrad(g: np.ndarray, w: np.ndarray, lmbda: float = 0.3, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """One SDMGrad step from weights w (the authors' loop, ml-opt-lab/sdmgrad nyuv2/utils.py: SGD lr 10,
    momentum 0.5, projection; ``obj.backward()`` of w'GGw + 2 lambda w'GG 1/K + const)."""
    k = len(g)
    gg = g @ g.T
    scale = np.mean(np.sqrt(np.diag(gg) + 1e-4))
    gg = gg / scale**2
    gg_mean = gg.mean(axis=1)

    def project(v: np.ndarray) -> np.ndarray:  # Euclidean projection on the simplex (bisection on tau)
        lo, hi = v.min() - 1.0, v.max()
        for _ in range(200):
            tau = (lo + hi) / 2
            if np.maximum(v - tau, 0).sum() > 1:
                lo = tau
            else:
                hi = tau
        return np.maximum(v - (lo + hi) / 2, 0)

    momentum_buffer = None
    for _ in range(niter):
        grad = 2 * gg @ w + 2 * lmbda * gg_mean  # d/dw of w'GGw + 2 lambda w'GG 1/K
        momentum_buffer = grad if momentum_buffer is None else 0.5 * momentum_buffer + grad
        w = project(w - 10.0 * momentum_buffer)
    d = (w @ g + lmbda * g.mean(0)) / (1 + lmbda)
    return k * d, w


def ref_aligned(g: np.ndarray) -> np.ndarray:
    """Aligned-MTL via the SVD of G^T = U S V^T: aligned task gradients sigma_min U V^T, summed."""
    u, sv, vt = np.linalg.svd(g.T, full_matrices=False)
    keep = sv**2 > (sv**2).max() * len(g) * np.finfo(np.float32).eps
    u, sv, vt = u[:, keep], sv[keep], vt[keep]
    aligned = sv.min() * u @ vt  # [n, K]
    return aligned.sum(axis=1)


SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_ew_matches_reference(seed: int, k: int) -> None:
    g = fixed_grads(k, seed=seed)
    np.testing.assert_allclose(written("ew", g), g.sum(0), atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_matches_reference(seed: int, k: int, normalization: str) -> None:
    g = fixed_grads(k, seed=seed)
    losses = np.linspace(0.5, 1.5, k)
    out = written("mgda", g, losses, normalization=normalization)
    np.testing.assert_allclose(out, ref_mgda(g, losses, normalization), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_pcgrad_matches_reference(seed: int, k: int) -> None:
    g = fixed_grads(k, seed=seed)
    m = method("pcgrad", k)
    gt = torch.from_numpy(g)
    comb = m.combine(gt @ gt.T, torch.ones(k, dtype=torch.float64))
    orders = comb.info["orders"]
    for i, order in enumerate(orders):
        assert sorted(order) == [j for j in range(k) if j != i]
    np.testing.assert_allclose((comb.coef @ gt).numpy(), ref_pcgrad(g, orders), atol=1e-6)


def test_pcgrad_orders_are_random_and_seeded() -> None:
    g = torch.from_numpy(fixed_grads(4))
    gram = g @ g.T
    one = torch.ones(4, dtype=torch.float64)
    orders_a = [method("pcgrad", 4).combine(gram, one).info["orders"] for _ in range(2)]
    assert orders_a[0] == orders_a[1]  # same seed, same orders
    m = method("pcgrad", 4)
    seen = {str(m.combine(gram, one).info["orders"]) for _ in range(20)}
    assert len(seen) > 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_cagrad_matches_reference(seed: int, k: int, alpha: float) -> None:
    g = fixed_grads(k, seed=seed)
    np.testing.assert_allclose(written("cagrad", g, alpha=alpha), ref_conflict_averse(g, alpha, False), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_imgrad_matches_reference(seed: int, k: int, alpha: float) -> None:
    g = fixed_grads(k, seed=seed)
    np.testing.assert_allclose(written("imgrad", g, alpha=alpha), ref_conflict_averse(g, alpha, True), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_nash_mtl_matches_reference(seed: int, k: int, max_norm: float) -> None:
    g = fixed_grads(k, seed=seed)
    np.testing.assert_allclose(written("nash_mtl", g, max_norm=max_norm), ref_nash(g, max_norm), atol=1e-6)


def test_nash_mtl_reuses_weights_between_updates() -> None:
    g = torch.from_numpy(fixed_grads(3))
    m = method("nash_mtl", 3, update_weights_every=3)
    one = torch.ones(3, dtype=torch.float64)
    assert m.needs_gram()
    first = m.combine(g @ g.T, one).coef
    assert not m.needs_gram()
    second = m.combine(None, one).coef
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_sdmgrad_matches_reference_including_warm_start(seed: int, k: int) -> None:
    g1, g2 = fixed_grads(k, seed=seed), fixed_grads(k, seed=seed + 100)
    m = method("sdmgrad", k)
    ref1, w = ref_sdmgrad(g1, np.full(k, 1.0 / k))
    np.testing.assert_allclose(m.apply(torch.from_numpy(g1)).numpy(), ref1, atol=1e-6)
    ref2, _ = ref_sdmgrad(g2, w)  # the second step starts from the first step's weights
    np.testing.assert_allclose(m.apply(torch.from_numpy(g2)).numpy(), ref2, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_aligned_mtl_matches_reference(seed: int, k: int) -> None:
    g = fixed_grads(k, seed=seed)
    np.testing.assert_allclose(written("aligned_mtl", g), ref_aligned(g), atol=1e-6)


def test_aligned_mtl_on_rank_deficient_gradients() -> None:
    g = fixed_grads(3)
    g[2] = 2 * g[0] - g[1]  # rank 2
    np.testing.assert_allclose(written("aligned_mtl", g), ref_aligned(g), atol=1e-6)


@pytest.mark.parametrize("name", [a for a in SCALED if a != "sdmgrad"])
def test_scale_equivariance(name: str) -> None:
    """Scaling every task gradient by s scales the written gradient by s.
    SDMGrad is left out by design, not skipped: its scale s = mean(sqrt(diag + 1e-4)) is only
    equivariant for gradients far larger than 1e-2; see the next test. Nash-MTL and FairGrad are
    scale invariant instead (test_alpha_fair_methods_are_scale_invariant)."""
    g = fixed_grads(3)
    kw = EXACT_EW.get(name, {})
    for s in (1e-3, 10.0):
        np.testing.assert_allclose(written(name, s * g, **kw), s * written(name, g, **kw), rtol=1e-6, atol=1e-12)


def test_sdmgrad_scale_equivariance_for_large_gradients() -> None:
    """With gradients large against the 1e-4 floor SDMGrad is equivariant to ~1e-6; with tiny ones it is not."""
    g = 100.0 * fixed_grads(3)
    np.testing.assert_allclose(written("sdmgrad", 10.0 * g), 10.0 * written("sdmgrad", g), rtol=1e-5)
    tiny = 1e-4 * fixed_grads(3)
    assert not np.allclose(written("sdmgrad", 10.0 * tiny), 10.0 * written("sdmgrad", tiny), rtol=1e-6)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_task_mix_rows_sum_to_the_written_gradient(name: str) -> None:
    g = torch.from_numpy(fixed_grads(3))
    m = method(name, 3, **EXACT_EW.get(name, {}))
    comb = m.combine(g @ g.T, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(comb.task_mix().sum(0), comb.coef)


def test_symmetric_methods_ignore_task_order() -> None:
    """Symmetric methods do not depend on the task order."""
    g = fixed_grads(3)
    symmetric = ("ew", "mgda", "cagrad", "nash_mtl", "imgrad", "aligned_mtl", "conicgrad", "upgrad", "fairgrad")
    for name in (*symmetric, "db_mtl"):
        base = written(name, g)
        for perm in itertools.permutations(range(3)):
            np.testing.assert_allclose(written(name, g[list(perm)]), base, atol=1e-6)
