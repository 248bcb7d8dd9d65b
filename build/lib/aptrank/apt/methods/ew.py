"""EW: equal weighting, d = g_0 = mean_k g_k (written: sum_k g_k, the plain summed loss).

The baseline every MTL paper compares against (e.g. Sener & Koltun, NeurIPS 2018, "Multi-Task
Learning as Multi-Objective Optimization", uniform scaling).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aptrank.apt.methods.base import Weighting


class EW(Weighting):
    name = "ew"
    paper = "uniform scaling (sum of task losses)"
    unit_tower_weights = True

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones(self.num_tasks, dtype=torch.float64)
