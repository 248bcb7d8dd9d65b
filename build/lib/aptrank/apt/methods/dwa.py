"""DWA: dynamic weight average over epoch-mean losses.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
w = K softmax((Lbar_{t-1} / Lbar_{t-2}) / T) from the epoch-mean task losses of the two previous
epochs (``end_epoch``), 1 for the first two epochs. T = 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from aptrank.apt.methods.base import Check, Weighting, positive


class DWA(Weighting):
    name = "dwa"
    paper = "Liu, Johns & Davison, CVPR 2019"
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {"T": (2.0, positive)}

    def __init__(self, num_tasks: int, **kwargs: Any) -> None:
        super().__init__(num_tasks, **kwargs)
        self.history: list[list[float]] = []

    def end_epoch(self, mean_task_losses: Sequence[float]) -> None:
        super().end_epoch(mean_task_losses)
        self.history = [*self.history[-1:], [float(x) for x in mean_task_losses]]

    def weights(self, losses: Tensor) -> Tensor:
        k = self.num_tasks
        if len(self.history) < 2:
            return torch.ones(k, dtype=torch.float64)
        prev, prev2 = (torch.tensor(h, dtype=torch.float64) for h in (self.history[-1], self.history[-2]))
        return k * torch.softmax((prev / prev2) / self.T, dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.history = [list(h) for h in state["history"]]
