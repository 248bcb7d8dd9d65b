"""Diagnostics of one optimizer step: APT's instant-gradient share, the cosine between gradient and
applied update, and AdaTask's rAU (relative accumulated update per task, Yang et al. AAAI 2023).

Reductions are queued as small tensors and read back in one pass (:meth:`StepDiagnostics.result`),
so a diagnostic step syncs once.
"""

from __future__ import annotations

import torch
from torch import Tensor

AU_DECAY = 0.9  # EMA of AdaTask's per-task squared update (over diagnostic steps)


class StepDiagnostics:
    """Accumulates APT/AdaTask diagnostics over the shared tensors of one step."""

    def __init__(self) -> None:
        self.instant_sq = 0.0  # sum ||(1 - beta_t) d_t||^2
        self.momentum_sq = 0.0  # sum ||m_t||^2
        self.betas: list[float] = []
        self.dot = 0.0
        self.grad_sq = 0.0
        self.update_sq = 0.0
        self.rau: dict[str, list[float]] = {}
        self._pending: list[Tensor] = []

    def add_momentum(self, instant: Tensor, m: Tensor, beta: float) -> None:
        self._pending.append(torch.stack([instant.float().pow(2).sum(), m.float().pow(2).sum()]))
        self.betas.append(beta)

    def add_update(self, grad: Tensor, update: Tensor) -> None:
        g, u = grad.float(), update.float()
        self._pending.append(torch.stack([(g * u).sum(), g.pow(2).sum(), u.pow(2).sum()]))

    def add_task_updates(self, name: str, state: dict, updates: list[Tensor]) -> None:
        au = torch.stack([x.float().pow(2).mean() for x in updates]).tolist()
        prev = state.get("au")  # a list of floats: checkpoints keep it exact (no dtype cast)
        state["au"] = au if prev is None else [AU_DECAY * a + (1 - AU_DECAY) * b for a, b in zip(prev, au, strict=True)]
        total = sum(state["au"])
        self.rau[name] = [x / total if total > 0 else 0.0 for x in state["au"]]

    def result(self) -> dict[str, float]:
        for t in self._pending:
            v = t.tolist()
            if len(v) == 2:
                self.instant_sq += v[0]
                self.momentum_sq += v[1]
            else:
                self.dot += v[0]
                self.grad_sq += v[1]
                self.update_sq += v[2]
        out: dict[str, float] = {}
        if self.momentum_sq > 0:
            out["apt/instant_share"] = (self.instant_sq / self.momentum_sq) ** 0.5
        if self.betas:
            out["apt/beta_mean"] = sum(self.betas) / len(self.betas)
            out["apt/beta_min"] = min(self.betas)
        if self.grad_sq > 0 and self.update_sq > 0:
            out["apt/cos_grad_update"] = self.dot / (self.grad_sq * self.update_sq) ** 0.5
        for name, shares in self.rau.items():
            for k, v in enumerate(shares):
                out[f"adatask/rau/{name}/task{k}"] = v
        return out
