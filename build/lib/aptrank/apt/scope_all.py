"""Per-task gradients under ``grad_scope: all``: every shared parameter, embedding tables included.

K backward passes (one from each task's loss root). Tables join the Gram matrix on the union of
the rows the batch touched (:func:`apt.gradients.sparse_rows`), so even here a table costs
[K, rows touched, dim], not K dense copies; the combined table gradient is written back sparse.
This is the comparison point for the default scope ``dense`` (tables get the summed-loss gradient
once), as in LibMTL, where every shared parameter gets the aggregator's treatment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aptrank.apt.gradients import (
    combine,
    gram,
    per_task_grads_loop,
    reduce_grads,
    reduce_stacked,
    sparse_rows,
    stack_dense,
)
from aptrank.apt.methods.base import Combination


def exact_all(
    shared: Sequence[Tensor],
    embeddings: Sequence[Tensor],
    towers: Sequence[Tensor],
    roots: Sequence[Tensor],
    choose: Callable[[Tensor], Combination],
    grad_reducer: Callable[[Tensor], Tensor] | None,
) -> tuple[Combination, Tensor, dict[Tensor, Tensor]]:
    """Writes ``.grad`` of every parameter; returns (combination, Gram matrix, shared -> [K, ...]).
    ``choose`` maps the Gram matrix to the method's combination."""
    inputs = [*shared, *embeddings, *towers]
    per_task = per_task_grads_loop(roots, inputs, retain_graph=False)
    ns, ne = len(shared), len(embeddings)
    g_shared = [stack_dense([row[i] for row in per_task], x) for i, x in enumerate(shared)]
    tables: list[tuple[Tensor | None, Tensor]] = []  # (rows or None for dense, [K, ...])
    for j, p in enumerate(embeddings):
        col = [row[ns + j] for row in per_task]
        if any(g is not None and g.is_sparse for g in col):
            tables.append(sparse_rows(col, p))
        else:
            tables.append((None, stack_dense(col, p)))
    g_towers = [stack_dense([row[ns + ne + i] for row in per_task], x) for i, x in enumerate(towers)]
    blocks = g_shared + [v for _, v in tables]
    if grad_reducer is not None:
        blocks = reduce_stacked(blocks, grad_reducer)
        g_shared, tables = blocks[:ns], [(r, v) for (r, _), v in zip(tables, blocks[ns:], strict=True)]
    gram_matrix = gram(blocks)
    comb = choose(gram_matrix)
    for p, g in zip(shared, g_shared, strict=True):
        p.grad = combine(comb.coef, g)
    for p, (rows, values) in zip(embeddings, tables, strict=True):
        summed = combine(comb.coef, values)
        if rows is None:
            p.grad = summed
        else:
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), summed, p.shape, check_invariants=False).coalesce()
    for p, g in zip(towers, g_towers, strict=True):
        p.grad = combine(comb.tower_weights, g)
    if grad_reducer is not None:
        reduce_grads(list(towers), grad_reducer)
    return comb, gram_matrix, dict(zip(shared, g_shared, strict=True))
