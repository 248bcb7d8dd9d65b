"""DB-MTL: dual balancing of loss scales and gradient magnitudes.

Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv 2308.12029, 2023 (code: LibMTL's
``DB_MTL``). Loss-scale balancing: each task trains log(L_k + eps), whose gradient is
h_k = g_k / (L_k + eps). Gradient-magnitude balancing: every h_k is scaled to the largest norm,
written gradient sum_k (max_j ||h_j|| / (||h_k|| + eps)) h_k (sum scale, like EW); the towers get
the gradient of sum_k log(L_k + eps) (tower weights 1 / (L_k + eps)), as in LibMTL.

Deviation: LibMTL balances an EMA of the h_k over steps (``beta`` 0.9, ``beta_sigma`` 0.5); an
EMA of the [K, n] gradient matrix cannot be formed from this step's Gram matrix, so apt balances
this step's h_k (LibMTL with beta = 0).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Combination, Method, nonneg


class DBMTL(Method):
    name = "db_mtl"
    paper = "Lin et al., arXiv 2308.12029 (2023)"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"eps": (1e-8, nonneg)}

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        inv = 1.0 / (losses + self.eps)  # d log(L_k + eps) / d L_k
        norms = (gram.diagonal().clamp(min=0).sqrt() * inv).clamp(min=0)  # ||h_k||
        scale = norms.max() / (norms + self.eps)
        scale = torch.where(norms > 0, scale, torch.zeros_like(scale))
        return Combination(coef=scale * inv, tower_weights=inv, info={"weights": scale.tolist()})
