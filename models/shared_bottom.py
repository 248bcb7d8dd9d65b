"""Shared-Bottom multi-task ranker and the single-task baseline.

Shared-Bottom (hard parameter sharing; Caruana, "Multitask Learning", Machine Learning 28, 1997):
one bottom MLP shared by all tasks, one tower per task on its output. The single-task baseline is
the same network with one task (used for the Δm% baselines, ALGORITHMS.md "Metrics").
"""

from __future__ import annotations

from typing import Literal

import torch

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import HiddenSizes, ModelConfig, ModelConfigError
from aptrank.models.layers import MLP


class SharedBottomConfig(ModelConfig):
    """The ``model`` section of ``arch: shared_bottom``: ``bottom_hidden`` sizes the shared bottom MLP."""

    arch: Literal["shared_bottom"] = "shared_bottom"
    bottom_hidden: HiddenSizes = (128, 64)


class SingleTaskConfig(ModelConfig):
    """The ``model`` section of ``arch: single_task``: the bottom MLP and the one ``task`` it predicts
    (default: the spec's first task)."""

    arch: Literal["single_task"] = "single_task"
    bottom_hidden: HiddenSizes = (128, 64)
    task: str | None = None


class SharedBottom(MultiTaskModel):
    """Embedding -> bottom MLP (shared, representation [B, H]) -> K towers."""

    config_class = SharedBottomConfig

    def __init__(
        self, spec: FeatureSpec, config: SharedBottomConfig | SingleTaskConfig, task_names: list[str] | None = None
    ) -> None:
        super().__init__(spec, config, spec.task_names if task_names is None else task_names)
        self.bottom = MLP(self.embedding.output_dim, config.bottom_hidden, config.dropout)
        self._add_towers(self.bottom.output_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden = self.bottom(embedded)
        return [hidden] * len(self.towers), hidden


class SingleTask(SharedBottom):
    """Shared-Bottom with one task, ``config.task`` (default: the spec's first task); logits [B, 1]."""

    config_class = SingleTaskConfig

    def __init__(self, spec: FeatureSpec, config: SingleTaskConfig) -> None:
        task = spec.task_names[0] if config.task is None else config.task
        if task not in spec.task_names:
            raise ModelConfigError("model.task", f"'{task}' is not a task of the FeatureSpec {spec.task_names}")
        super().__init__(spec, config, [task])
