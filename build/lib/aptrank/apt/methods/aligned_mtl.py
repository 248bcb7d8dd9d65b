"""Aligned-MTL: align the principal components of the gradient matrix.

Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023 (code:
SamsungLabs/MTL; LibMTL's Aligned_MTL). Eigendecompose M = G G^T = V L V^T, keep the eigenvalues
above max(L) K eps (the numerical rank r), B = sqrt(l_min) V_r L_r^{-1/2} V_r^T (scale 'min'),
alpha = B 1; the written gradient is G^T alpha (so K d with d = G^T alpha / K). Identical
gradients give alpha = 1 (EW); K = 1 gives the plain gradient. Tower weights: 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aptrank.apt.methods.base import Combination, Method, ones

_EPS = float(torch.finfo(torch.float32).eps)  # LibMTL's rank tolerance uses torch's default dtype


class AlignedMTL(Method):
    name = "aligned_mtl"
    paper = "Senushkin et al., CVPR 2023"
    unit_tower_weights = True

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        k = self.num_tasks
        evals, evecs = torch.linalg.eigh((gram + gram.T) / 2)
        tol = float(evals.max()) * k * _EPS
        keep = evals > tol
        if not bool(keep.any()):
            return Combination(coef=ones(k), tower_weights=ones(k))
        lam, v = evals[keep], evecs[:, keep]
        b = lam.min().sqrt() * (v @ torch.diag(lam.rsqrt()) @ v.T)
        alpha = b.sum(dim=0)
        return Combination(coef=alpha, tower_weights=ones(k), info={"weights": alpha.tolist()})
