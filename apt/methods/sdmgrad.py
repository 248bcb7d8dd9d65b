"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023 (code: ml-opt-lab/sdmgrad; TorchJD and LibMTL agree). GG = G G^T / s^2
with s = mean_k sqrt(M_kk + 1e-4); the weights approximate the QP
w* = argmin_{w in simplex} 1/2 w^T GG w + lambda w^T GG 1/K by ``niter`` projected heavy-ball steps
(lr 10, momentum 0.5, the momentum buffer fresh each step), w warm started across steps. The step
direction is the authors' ``GG w + lambda GG 1/K``: the gradient of that QP, i.e. half the gradient
of w^T GG w + 2 lambda w^T GG 1/K. (Taking the latter's full gradient doubles the step; at lr 10 the
iteration then jumps between simplex corners instead of converging.) d = (G^T w + lambda g_0) /
(1 + lambda), written K * d. lambda = 0.3. Tower weights: 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, ones, pos_int, positive, unit
from aptrank.apt.solvers import project_simplex


class SDMGrad(Method):
    name = "sdmgrad"
    paper = "Xiao, Ban & Ji, NeurIPS 2023"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {
        "lmbda": (0.3, nonneg),
        "niter": (20, pos_int),
        "lr": (10.0, positive),
        "momentum": (0.5, unit),
    }

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.w = np.full(num_tasks, 1.0 / num_tasks)

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        k = self.num_tasks
        m = gram.numpy()
        scale = np.mean(np.sqrt(np.diag(m) + 1e-4))
        gg = m / scale**2
        gg_mean = gg.mean(axis=1)
        w, buf = self.w.copy(), None
        for _ in range(self.niter):
            grad = gg @ w + self.lmbda * gg_mean
            buf = grad if buf is None else self.momentum * buf + grad
            w = project_simplex(w - self.lr * buf)
        self.w = w
        coef = k * (w + self.lmbda / k) / (1 + self.lmbda)
        return Combination(coef=torch.from_numpy(coef), tower_weights=ones(k), info={"weights": w.tolist()})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "w": self.w.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.w = np.asarray(state["w"], dtype=np.float64)
