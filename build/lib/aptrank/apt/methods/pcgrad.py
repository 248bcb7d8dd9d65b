"""PCGrad: project each task gradient off the others it conflicts with.

Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020. For each i, in a random order
over j != i: if g_i' . g_j < 0 then g_i' -= (g_i' . g_j) / ||g_j||^2 g_j, always against the
original g_j; d = mean_i g_i' (written: sum_i g_i'). Computed on the Gram matrix: g_i' = C_i G is
tracked by its coefficient row C_i, so g_i' . g_j = C_i M_j. The random orders come from the
optimizer's seeded generator (``info['orders']`` records them). Tower weights: 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aptrank.apt.methods.base import Combination, Method, ones


class PCGrad(Method):
    name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"
    unit_tower_weights = True

    def combine(self, gram: Tensor, losses: Tensor) -> Combination:
        k = self.num_tasks
        c = torch.eye(k, dtype=torch.float64)
        orders = []
        for i in range(k):
            others = [j for j in range(k) if j != i]
            perm = torch.randperm(len(others), generator=self.generator).tolist()
            order = [others[p] for p in perm]
            orders.append(order)
            for j in order:
                dot = float(c[i] @ gram[:, j])
                if dot < 0 and gram[j, j] > 0:
                    c[i, j] -= dot / float(gram[j, j])
        return Combination(coef=c.sum(0), mix=c, tower_weights=ones(k), info={"orders": orders})
