"""UPGrad: unconflicting projection of gradients (Jacobian descent).

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232, 2024 (code:
TorchJD/torchjd, ``UPGrad``). Each task gradient g_i is projected onto the dual cone
{x : G x >= 0} of all task gradients (so no task's loss increases to first order) and the projections
are averaged. On the Gram matrix: M' = M / tr(M) (zero when tr(M) < ``norm_eps``), plus
``reg_eps`` I, as TorchJD does; v_i = argmin_{v >= e_i / K} v^T M' v (exact, by NNLS:
apt.solvers.dual_cone_weights); the aggregate is G^T sum_i v_i, written K times that (so identical
gradients give EW). Tower weights: 1. Defaults norm_eps = reg_eps = 1e-4, TorchJD's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, ones
from aptrank.apt.solvers import dual_cone_weights


def upgrad_weights(gram: np.ndarray, norm_eps: float, reg_eps: float) -> np.ndarray:
    """sum_i v_i (see the module docstring): the aggregate is G^T of this."""
    k = gram.shape[0]
    trace = float(np.trace(gram))
    m = gram / trace if trace >= norm_eps else np.zeros_like(gram)
    m = m + reg_eps * np.eye(k)
    return sum(dual_cone_weights(m, np.eye(k)[i] / k) for i in range(k))


class UPGrad(Method):
    name = "upgrad"
    paper = "Quinton & Rey, arXiv 2406.16232 (2024)"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"norm_eps": (1e-4, nonneg), "reg_eps": (1e-4, nonneg)}

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        w = upgrad_weights(gram.numpy(), self.norm_eps, self.reg_eps)
        coef = torch.from_numpy(self.num_tasks * w)
        return Combination(coef=coef, tower_weights=ones(self.num_tasks), info={"weights": w.tolist()})
