"""MGDA: the min-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
w = argmin_{w in simplex} ||G^T w||^2 on the (optionally normalised) Gram matrix, d = G^T w
(written: K * d). Gradient normalisation as in the paper's code / LibMTL: ``none`` (default), ``l2``
(g_k / ||g_k||), ``loss`` (g_k / L_k), ``loss+`` (g_k / (L_k ||g_k||)); d then combines the
normalised gradients. The min-norm problem is solved exactly (apt.solvers.min_norm_weights) rather
than by Frank-Wolfe, so the result is the min-norm point to machine precision.
Tower weights: 1 (each tower gets its own loss's gradient, as in LibMTL).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, one_of, ones
from aptrank.apt.solvers import min_norm_weights


class MGDA(Method):
    name = "mgda"
    paper = "Sener & Koltun, NeurIPS 2018"
    unit_tower_weights = True
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"normalization": ("none", one_of("none", "l2", "loss", "loss+"))}

    def normalizers(self, gram: Tensor, losses: Tensor) -> Tensor:
        norms = gram.diagonal().clamp(min=0).sqrt()
        gn = {
            "none": torch.ones_like(norms),
            "l2": norms,
            "loss": losses,
            "loss+": losses * norms,
        }[self.normalization]
        return torch.where(gn > 0, gn, torch.ones_like(gn))

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        k = self.num_tasks
        gn = self.normalizers(gram, losses)
        m = gram / torch.outer(gn, gn)
        w = torch.from_numpy(min_norm_weights(np.asarray(m.numpy(), dtype=np.float64)))
        coef = k * w / gn
        return Combination(coef=coef, tower_weights=ones(k), info={"weights": w.tolist()})
