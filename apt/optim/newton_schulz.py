"""Newton-Schulz orthogonalisation for Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/).

The same quintic iteration, coefficients (3.4445, -4.775, 2.0315), bfloat16 arithmetic and
operation order as ``torch.optim.Muon`` (torch >= 2.9), so our Muon matches it exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def zeropower_via_newtonschulz(
    g: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5, eps: float = NS_EPS
) -> Tensor:
    """An approximately orthogonal matrix U S' V^T (S' ~ 1) from the 2-D ``g`` = U S V^T (bfloat16)."""
    if g.ndim != 2:
        raise ValueError(f"Newton-Schulz needs a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = coefficients
    x = g.bfloat16()
    if x is g:
        x = x.clone()
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-shape learning rate: 'original' (default) sqrt(max(1, A/B)); 'match_rms_adamw'
    0.2 sqrt(max(A, B)) (Moonshot, "Muon is Scalable for LLM Training", 2025)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr
