"""Shared-Bottom multi-task ranker and the single-task baseline.

Shared-Bottom (hard parameter sharing; Caruana, "Multitask Learning", Machine Learning 28, 1997):
one bottom MLP shared by all tasks, one tower per task on its output. The single-task baseline is
the same network with one task (used for the Δm% baselines, ALGORITHMS.md "Metrics").
"""

from __future__ import annotations

import torch

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import ModelConfig, ModelConfigError
from aptrank.models.layers import MLP


class SharedBottom(MultiTaskModel):
    """Embedding -> bottom MLP (shared, representation [B, H]) -> K towers."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig, task_names: list[str] | None = None) -> None:
        super().__init__(spec, config, spec.task_names if task_names is None else task_names)
        self.bottom = MLP(self.embedding.output_dim, config.bottom_hidden, config.dropout)
        self._add_towers(self.bottom.output_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden = self.bottom(embedded)
        return [hidden] * len(self.towers), hidden


class SingleTask(SharedBottom):
    """Shared-Bottom with one task, ``config.task`` (default: the spec's first task); logits [B, 1]."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig) -> None:
        task = spec.task_names[0] if config.task is None else config.task
        if task not in spec.task_names:
            raise ModelConfigError(f"model config 'task': '{task}' is not a task of the FeatureSpec {spec.task_names}")
        super().__init__(spec, config, [task])
