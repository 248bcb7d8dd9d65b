"""Guards of :class:`apt.engine.MultiTaskOptimizer`: the losses it is given, and non-finite values.

A NaN or Inf loss or gradient is caught before any parameter (or method state) changes:
``mtl.nonfinite: raise`` (default) raises :class:`NonFiniteError`; ``skip`` drops the step (no
parameter, moment or method-state update), counts it, and raises after ``mtl.max_skipped_in_a_row``
skipped steps in a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class NonFiniteError(FloatingPointError):
    """A task loss or gradient is NaN or Inf (the step changed nothing)."""


def loss_roots(losses: Tensor | Sequence[Tensor], k: int) -> tuple[Tensor, Sequence[Tensor]]:
    """(the [K] loss tensor, the K graph roots) from a [K] tensor or K scalar tensors; ``ValueError``
    naming the argument for floats, tensors without a graph and wrong shapes."""
    if isinstance(losses, Tensor):
        if losses.shape != (k,):
            raise ValueError(f"losses must have shape [{k}], got {tuple(losses.shape)}")
        _needs_graph(losses, "losses")
        return losses, losses
    roots = list(losses)
    for i, r in enumerate(roots):
        if not isinstance(r, Tensor):
            raise ValueError(
                f"losses[{i}] is a {type(r).__name__}, not a tensor: pass the loss tensors themselves "
                "(before .item()), so apt can backpropagate them"
            )
        _needs_graph(r, f"losses[{i}]")
    if len(roots) != k or any(r.numel() != 1 for r in roots):
        raise ValueError(f"losses must be {k} scalar tensors, got shapes {[tuple(r.shape) for r in roots]}")
    roots = [r.reshape(()) for r in roots]
    return torch.stack(roots), roots


def _needs_graph(t: Tensor, what: str) -> None:
    if not t.requires_grad:
        raise ValueError(
            f"{what} does not require grad (computed under no_grad or detached): apt cannot backpropagate it"
        )


def check_losses(loss_values: Tensor, task_names: Sequence[str]) -> None:
    if not bool(torch.isfinite(loss_values).all()):
        bad = {n: float(v) for n, v in zip(task_names, loss_values.tolist(), strict=True) if not math.isfinite(v)}
        raise NonFiniteError(f"non-finite task loss {bad}; no parameter was changed")


def check_gram(gram: Tensor, task_names: Sequence[str]) -> Tensor:
    """``gram`` if finite (a NaN/Inf anywhere in task k's gradient makes M_kk non-finite)."""
    if not bool(torch.isfinite(gram).all()):
        bad = [n for n, v in zip(task_names, gram.diagonal().tolist(), strict=True) if not math.isfinite(v)]
        bad = bad or list(task_names)
        raise NonFiniteError(f"non-finite shared gradient of task(s) {bad}; no parameter was changed")
    return gram


def check_grads(params: Sequence[Tensor], name: Callable[[Tensor, str], str]) -> None:
    """Raise naming the first parameter whose ``.grad`` (dense, or a sparse one's values) is not finite."""
    for i, p in enumerate(params):
        g = p.grad
        if g is None:
            continue
        values = g._values() if g.is_sparse else g  # uncoalesced values: no sort of the rows
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteError(f"non-finite gradient of {name(p, f'param[{i}]')!r}; no parameter was changed")
