"""The classic two-objective toy problem of CAGrad (Liu et al., NeurIPS 2021, Fig. 1) and Nash-MTL
(Navon et al., ICML 2022, Fig. 1): two losses of a point x in R^2 whose Pareto set is an arc
over x1 in [-7, 7] at x2 ~= -8.36 (slightly curved, see ``pareto_front``), with flat valleys where
plain gradient descent on the mean stalls.

Used by tests/apt/test_toy.py and bench/toy_pareto.py; ``run`` drives any ``apt`` method with the
:class:`apt.MultiTaskOptimizer` (the point is the only, shared, parameter).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aptrank.apt.config import MTLConfig
from aptrank.apt.engine import MultiTaskOptimizer
from aptrank.apt.roles import ParamRoles

PARETO_X2 = -8.3552
PARETO_X1 = (-7.0, 7.0)
INITS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
_LOWER = 5e-6


def losses(x: Tensor) -> Tensor:
    """[2] losses of the point x [2] (the toy's definition, CAGrad's toy.py)."""
    x1, x2 = x[0], x[1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), _LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), _LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
    return torch.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2])


def run(method: str, init: tuple[float, float], steps: int, lr: float = 0.1, **method_kwargs) -> Tensor:
    """Trajectory [steps + 1, 2] of Adam (betas 0.9, 0.99) driven by ``method`` from ``init``; the
    learning rate is constant for 80% of the steps, then decays linearly to 0 so the point settles.
    (The papers run Adam at lr 1e-3 for 100k steps; this reaches the same end points in ~1k.)"""
    x = nn.Parameter(torch.tensor(init, dtype=torch.float64))
    cfg = MTLConfig.from_dict({"method": method, "method_kwargs": method_kwargs, "lr": lr, "betas": [0.9, 0.99]})
    opt = MultiTaskOptimizer(cfg, ParamRoles(shared=[x]), 2)
    traj = [x.detach().clone()]
    for t in range(steps):
        for group in opt.optimizer.param_groups:
            group["lr"] = lr * min(1.0, 5 * (1 - t / steps))
        opt.step(losses(x))
        traj.append(x.detach().clone())
    return torch.stack(traj)


def pareto_gap(x: Tensor) -> float:
    """||min-norm point of conv{grad f1, grad f2}|| at x: 0 exactly at Pareto-stationary points."""
    x = x.detach().clone().requires_grad_(True)
    f = losses(x)
    g1, g2 = (torch.autograd.grad(f[i], x, retain_graph=True)[0] for i in range(2))
    diff = g1 - g2
    denom = float(diff @ diff)
    gamma = 0.5 if denom == 0 else min(1.0, max(0.0, float((g2 - g1) @ g2) / denom))
    return float((gamma * g1 + (1 - gamma) * g2).norm())


def front_distance(x: Tensor) -> float:
    """Euclidean distance from x to the Pareto set (sampled finely by ``pareto_front``)."""
    global _FRONT
    if _FRONT is None:
        _FRONT = pareto_front(1401)
    return float((_FRONT - x.detach().double().view(1, 2)).norm(dim=1).min())


def on_pareto_front(x: Tensor, tol: float = 0.05) -> bool:
    """Whether x lies within ``tol`` of the Pareto set."""
    return front_distance(x) <= tol


_FRONT: Tensor | None = None


def pareto_front(n: int = 101) -> Tensor:
    """Points [n, 2] of the Pareto set: for x1 in [-7, 7], x2 solves the stationarity condition of
    the best convex combination (lambda = (x1 + 7) / 14) of the two quadratic branches, by bisection."""
    pts = []
    for x1 in torch.linspace(PARETO_X1[0], PARETO_X1[1], n, dtype=torch.float64).tolist():
        mix = (49.0 - x1 * x1) / 10.0  # lambda f1_sq + (1 - lambda) f2_sq without the x2 terms, + 20

        def h(x2: float, mix: float = mix) -> float:
            c2 = torch.tanh(torch.tensor(-x2 / 2, dtype=torch.float64))
            dc2 = -0.5 * (1 - c2**2)
            return float(0.02 * (x2 + 8) * c2 + dc2 * (mix + 0.01 * (x2 + 8) ** 2 - 20))

        a, b = -12.0, -4.0
        for _ in range(80):
            mid = (a + b) / 2
            if (h(a) < 0) == (h(mid) < 0):
                a = mid
            else:
                b = mid
        pts.append((x1, (a + b) / 2))
    return torch.tensor(pts, dtype=torch.float64)
