"""The training job's objective and optimizer: K per-task losses, each its own graph root, and the
``apt`` engine built from the job's ``mtl`` section over the model's parameter roles."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from aptrank.apt import MultiTaskOptimizer, ParamRoles
from aptrank.models.task_dag import TaskDag, log1mexp
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.parallel import SingleProcess


def task_losses(
    task_logits: Sequence[torch.Tensor], labels: torch.Tensor, dag: TaskDag | None = None
) -> list[torch.Tensor]:
    """Per-task mean binary cross-entropy from each task's own logits [B, 1] (labels [B, K]): K scalar
    losses, each its own graph root (see ``apt.engine``: a task's backward pass skips other towers).

    Under task dependencies (``dag``, ESMM: Ma et al., SIGIR 2018, eq. 4) a child's loss is the
    cross-entropy of its entire-space probability p(parent) * p(child | parent) against its own label
    on every row, in log space (:meth:`TaskDag.log_probabilities`, :func:`log1mexp`), so its backward
    pass also reaches its ancestors' towers; with ``conditional_loss`` the cross-entropy of
    p(child | parent) on the rows whose parent label is 1 (their mean; 0 when there are none) is added.
    Roots keep the independent loss. Still K losses: every ``apt`` method applies unchanged."""
    flat = [z.reshape(-1) for z in task_logits]
    if dag is None or not dag.has_dependencies:
        return [F.binary_cross_entropy_with_logits(z, labels[:, k]) for k, z in enumerate(flat)]
    log_p = dag.log_probabilities(flat)
    losses = []
    for k, (z, parent) in enumerate(zip(flat, dag.parent, strict=True)):
        y = labels[:, k]
        if parent is None:
            losses.append(F.binary_cross_entropy_with_logits(z, y))
            continue
        loss = -(y * log_p[k] + (1.0 - y) * log1mexp(log_p[k])).mean()
        if dag.conditional_loss[k]:
            seen = labels[:, parent]
            per_row = F.binary_cross_entropy_with_logits(z, y, reduction="none")
            loss = loss + (per_row * seen).sum() / seen.sum().clamp(min=1.0)
        losses.append(loss)
    return losses


def build_multitask_optimizer(
    cfg: JobConfig,
    model: torch.nn.Module,
    parallel: SingleProcess,
    diagnostics: Callable[[int, dict[str, float]], None] | None,
) -> MultiTaskOptimizer:
    """The ``apt`` engine for ``model`` as the job's ``mtl`` section says (seeded by the job seed)."""
    roles = parallel.roles(model)
    return MultiTaskOptimizer(
        cfg.mtl_seeded,
        ParamRoles(
            shared=roles["shared"],
            embeddings=roles["embeddings"],
            task=roles["task"],
            output=roles["output"],
            external_embeddings=parallel.external_embeddings,
        ),
        num_tasks=len(model.task_names),
        callback=diagnostics,
        grad_reducer=parallel.grad_reducer,
        task_names=model.task_names,
    )
