"""IMGrad: imbalance-sensitive conflict-averse gradient.

Zhou et al., "Injecting Imbalance Sensitivity for Multi-Task Learning", IJCAI 2025 (code:
zzpustc/IMGrad). g_m = the MGDA direction (min-norm point), s = cos(g_0, g_m), c = alpha ||g_0||,
w = argmin_{w in simplex} (1.5 - s) g_w^T g_0 + s c ||g_w||,
d = (g_0 + (c / ||g_w||) g_w) / (1 + alpha^2). Written: K * d. alpha = 0.8 in the authors' runs,
0.5 by default here. Tower weights: 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg, one_of, ones
from aptrank.apt.methods.cagrad import conflict_averse
from aptrank.apt.solvers import min_norm_weights


def mgda_cosine(gram: Tensor) -> float:
    """cos(g_0, g_m) from the Gram matrix (0 when either vector vanishes)."""
    m = gram.numpy()
    k = m.shape[0]
    w = min_norm_weights(m)
    u = np.full(k, 1.0 / k)
    dot, n0, nm = u @ m @ w, u @ m @ u, w @ m @ w
    return float(dot / np.sqrt(n0 * nm)) if n0 > 0 and nm > 0 else 0.0


class IMGrad(Method):
    name = "imgrad"
    paper = "Zhou et al., IJCAI 2025"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"alpha": (0.5, nonneg), "rescale": (1, one_of(0, 1, 2))}

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        s = mgda_cosine(gram)
        coef = conflict_averse(gram, self.alpha, self.rescale, cos_weight=s)
        return Combination(coef=coef, tower_weights=ones(self.num_tasks), info={"cos_mgda": s})
