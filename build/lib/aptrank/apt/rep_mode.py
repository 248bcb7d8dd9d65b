"""``grad_mode: rep``: per-task gradients w.r.t. the shared representation only.

LibMTL's ``rep_grad`` (Lin et al., LibMTL, JMLR 2023): the K per-task gradients of the
representation R (the experts' stacked output, a shared bottom's output) form the Gram matrix; the
method's combination is then applied by ONE backward from two roots: the losses with the tower
weights w, and R with (sum_k coef_k r_k - sum_k w_k r_k). Everything below R so receives the
combined gradient sum_k coef_k r_k, everything else (towers, gates, embeddings through the gates)
the weighted-loss gradient. Cheaper than exact per-task parameter gradients (a task pass stops at
R), but an approximation of them: the Gram of representation gradients is not the Gram of
parameter gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aptrank.apt.gradients import combine, gram, per_task_grads
from aptrank.apt.methods.base import Combination


def rep_step(
    losses: Tensor,
    roots: Sequence[Tensor],
    rep: Tensor,
    backend: str,
    choose: Callable[[Tensor], Combination],
    grad_reducer: Callable[[Tensor], Tensor] | None,
) -> tuple[Combination, Tensor]:
    """Writes ``.grad`` through the two-root backward; returns (combination, Gram matrix). ``choose``
    maps the Gram matrix to the method's combination; ``grad_reducer`` (data parallel) averages the
    Gram matrix so every rank picks the same combination."""
    (g_rep,) = per_task_grads(losses, [rep], backend, retain_graph=True, roots=roots)
    gram_matrix = gram([g_rep])
    if grad_reducer is not None:
        gram_matrix = grad_reducer(gram_matrix.to(rep.device)).double().cpu()
    comb = choose(gram_matrix)
    correction = combine(comb.coef, g_rep) - combine(comb.tower_weights, g_rep)
    torch.autograd.backward([losses, rep], [comb.tower_weights.to(losses), correction])
    return comb, gram_matrix
