"""Per-task gradients: the cost centre of gradient-based MTL methods.

``batched``: one backward with K cotangents (``torch.autograd.grad(..., grad_outputs=eye(K),
is_grads_batched=True)``: vmap over the rows of the identity). ``loop``: K backward passes (what
LibMTL does). Both give [K, *shape] per input; the engine picks the inputs (dense shared parameters,
towers and the embedding output under scope ``dense``; the representation in ``rep`` mode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def per_task_grads(
    losses: Tensor, inputs: Sequence[Tensor], backend: str, retain_graph: bool, roots: Sequence[Tensor] | None = None
) -> list[Tensor]:
    """d L_k / d input for every task k and input: a [K, *input.shape] tensor per input (zeros where
    an input does not reach a loss). Dense inputs only (see :func:`per_task_grads_loop`). ``losses``
    is the [K] tensor; ``roots`` (default: its entries) the K losses the ``loop`` passes start from."""
    k = losses.shape[0]
    if backend == "batched":
        eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(
            losses, list(inputs), grad_outputs=eye, is_grads_batched=True, retain_graph=retain_graph, allow_unused=True
        )
        return [
            g if g is not None else torch.zeros((k, *x.shape), dtype=x.dtype, device=x.device)
            for g, x in zip(grads, inputs, strict=True)
        ]
    per_task = per_task_grads_loop(losses if roots is None else roots, inputs, retain_graph)
    return [stack_dense([row[i] for row in per_task], x) for i, x in enumerate(inputs)]


def per_task_grads_loop(
    losses: Sequence[Tensor], inputs: Sequence[Tensor], retain_graph: bool
) -> list[list[Tensor | None]]:
    """K backward passes, one from each loss (a [K] tensor or K scalar roots): ``out[k][i]`` =
    d L_k / d inputs[i] (None if unused; sparse stays sparse)."""
    k = len(losses)
    return [
        list(torch.autograd.grad(losses[t], list(inputs), retain_graph=retain_graph or t < k - 1, allow_unused=True))
        for t in range(k)
    ]


def stack_dense(grads: Sequence[Tensor | None], like: Tensor) -> Tensor:
    return torch.stack(
        [(g.to_dense() if g.is_sparse else g) if g is not None else torch.zeros_like(like) for g in grads]
    )


def sparse_rows(grads: Sequence[Tensor | None], like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-task sparse row gradients of one table on the union of their rows: (rows [U], values
    [K, U, dim]). Rows no task touches are left out (their gradient is zero for every task)."""
    parts = [g.coalesce() if g is not None else None for g in grads]
    present = [g.indices()[0] for g in parts if g is not None]
    rows = torch.cat(present).unique() if present else torch.zeros(0, dtype=torch.long, device=like.device)
    values = torch.zeros((len(parts), rows.numel(), *like.shape[1:]), dtype=like.dtype, device=like.device)
    for t, g in enumerate(parts):
        if g is not None and g._nnz() > 0:
            values[t].index_add_(0, torch.searchsorted(rows, g.indices()[0]), g.values())
    return rows, values


def flat_rows(
    per_task: Sequence[Sequence[Tensor | None]], params: Sequence[Tensor], summed: Sequence[Tensor | None] | None
) -> Tensor:
    """[K, n]: row k is task k's gradient of ``params``, flattened and concatenated (None: zero). With
    ``summed`` (the gradients of sum_k L_k) one more row is appended: summed minus the other rows."""

    def flat(grads: Sequence[Tensor | None]) -> Tensor:
        return torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
        )

    rows = [flat(g) for g in per_task]
    if summed is not None:
        total = flat(summed)
        rows.append(total - torch.stack(rows).sum(0) if rows else total)
    return torch.stack(rows)


def unflatten(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Split the last axis of ``flat`` ([n] or [K, n]) back into tensors shaped like ``params``."""
    lead, out, start = flat.shape[:-1], [], 0
    for p in params:
        n = p.numel()
        out.append(flat[..., start : start + n].reshape(*lead, *p.shape))
        start += n
    return out


def combine(coef: Tensor, stacked: Tensor) -> Tensor:
    """sum_k coef_k stacked[k]."""
    return torch.tensordot(coef.to(stacked), stacked, dims=1)


def gram(blocks: Sequence[Tensor]) -> Tensor:
    """M = sum over blocks of B B^T with B = block.reshape(K, -1): float64 on the CPU."""
    total: Tensor | None = None
    for b in blocks:
        flat = b.reshape(b.shape[0], -1)
        part = (flat @ flat.T).double()
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no gradients to build a Gram matrix from")
    return total.cpu()


def reduce_stacked(tensors: list[Tensor], reducer: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """Apply ``reducer`` once to the concatenation of [K, ...] tensors and split the result back."""
    if not tensors:
        return tensors
    k = tensors[0].shape[0]
    flat = torch.cat([t.reshape(k, -1) for t in tensors], dim=1)
    flat = reducer(flat)
    out, start = [], 0
    for t in tensors:
        n = t[0].numel()
        out.append(flat[:, start : start + n].reshape(t.shape))
        start += n
    return out


def reduce_grads(params: Sequence[Tensor], reducer: Callable[[Tensor], Tensor]) -> None:
    """Apply ``reducer`` once to the concatenated dense ``.grad`` of ``params`` (in place).
    Sparse gradients are left alone (sharded tables are reduced by the embedding's own machinery)."""
    dense = [p for p in params if p.grad is not None and not p.grad.is_sparse]
    if not dense:
        return
    flat = reducer(torch.cat([p.grad.reshape(-1) for p in dense]))
    start = 0
    for p in dense:
        n = p.grad.numel()
        p.grad.copy_(flat[start : start + n].view_as(p.grad))
        start += n
