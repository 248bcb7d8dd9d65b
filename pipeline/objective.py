"""The training job's objective and optimizer: K per-task losses, each its own graph root, and the
``apt`` engine built from the job's ``mtl`` section over the model's parameter roles."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from aptrank.apt import MultiTaskOptimizer, ParamRoles
from aptrank.pipeline.config import JobConfig
from aptrank.pipeline.parallel import SingleProcess


def task_losses(task_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
    """Per-task mean binary cross-entropy from each task's own logits [B, 1] (labels [B, K]): K scalar
    losses, each its own graph root (see ``apt.engine``: a task's backward pass skips other towers)."""
    return [F.binary_cross_entropy_with_logits(z.reshape(-1), labels[:, k]) for k, z in enumerate(task_logits)]


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
