"""Newton-Schulz orthogonalisation for Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/).

The same quintic iteration, coefficients (3.4445, -4.775, 2.0315), bfloat16 arithmetic and
operation order as ``torch.optim.Muon`` (torch >= 2.9), so our Muon matches it exactly.

:func:`zeropower_via_newtonschulz` also takes a stack ``[B, m, n]`` and runs the iteration on all B
matrices at once (batched matmuls): every matrix gets exactly the bits it gets alone (tested), and
an optimizer step orthogonalises its same-shape weights (MMoE experts, per-task gates and towers)
in one call instead of one per matrix, 3-4x cheaper on the CPU for these small shapes
(bench/mtl_step.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def zeropower_via_newtonschulz(
    g: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5, eps: float = NS_EPS
) -> Tensor:
    """An approximately orthogonal U S' V^T (S' ~ 1) for ``g`` = U S V^T, in bfloat16: ``g`` is one
    matrix [m, n] or a stack [B, m, n] (each matrix normalised and iterated on its own)."""
    if g.ndim not in (2, 3):
        raise ValueError(f"Newton-Schulz needs a 2-D matrix or a [B, m, n] stack, got shape {tuple(g.shape)}")
    a, b, c = coefficients
    single = g.ndim == 2
    x = g.bfloat16()
    if single:
        x = x.unsqueeze(0)
    if x is g or x.data_ptr() == g.data_ptr():
        x = x.clone()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    if tall:
        x = x.mT
    return x[0] if single else x


def orthogonalise_all(
    matrices: Sequence[Tensor], settings: Sequence[tuple[tuple[float, float, float], int, float]]
) -> list[Tensor]:
    """Newton-Schulz of every matrix (settings: (coefficients, steps, eps) per matrix), one batched
    call per group of matrices with the same shape, dtype, device and settings."""
    out: list[Tensor] = [matrices[0]] * len(matrices)
    buckets: dict[tuple, list[int]] = {}
    for i, m in enumerate(matrices):
        coef, steps, eps = settings[i]
        buckets.setdefault((tuple(m.shape), m.dtype, m.device, tuple(coef), steps, eps), []).append(i)
    for (_, _, _, coef, steps, eps), idx in buckets.items():
        stacked = torch.stack([matrices[i] for i in idx])
        for i, ortho in zip(idx, zeropower_via_newtonschulz(stacked, coef, steps, eps).unbind(0), strict=True):
            out[i] = ortho
    return out


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-shape learning rate: 'original' (default) sqrt(max(1, A/B)); 'match_rms_adamw'
    0.2 sqrt(max(A, B)) (Moonshot, "Muon is Scalable for LLM Training", 2025)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr
