"""RLW: random loss weighting.

Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning",
TMLR 2022 (arXiv 2111.10603, 2021). w = K softmax(z), z ~ N(0, I) fresh each step, drawn from the
optimizer's seeded generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aptrank.apt.methods.base import Weighting


class RLW(Weighting):
    name = "rlw"
    paper = "Lin et al., TMLR 2022"

    def weights(self, losses: Tensor) -> Tensor:
        z = torch.randn(self.num_tasks, generator=self.generator, dtype=torch.float64)
        return self.num_tasks * torch.softmax(z, dim=0)
