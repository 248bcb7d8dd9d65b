"""Shared-Bottom multi-task ranker and the single-task baseline.

Shared-Bottom (hard parameter sharing; Caruana, "Multitask Learning", Machine Learning 28, 1997):
one bottom MLP shared by all tasks, one tower per task on its output. The single-task baseline is
the same network with one task (used for the Δm% baselines, ALGORITHMS.md "Metrics").

Export form (:class:`SharedBottomHead`): the same modules with the bottom's first Linear exposed as
``first``, so the export can fold small embedding tables into it (``models.export.fold``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import HiddenSizes, ModelConfig, ModelConfigError
from aptrank.models.layers import MLP, start_with_linear


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

    def export_head(self) -> nn.Module:
        """:class:`SharedBottomHead` when the bottom starts with a Linear layer."""
        return SharedBottomHead(self) if start_with_linear([self.bottom]) else super().export_head()


class SharedBottomHead(nn.Module):
    """``forward(embedded) -> logits [B, K]`` of a :class:`SharedBottom` (and the single-task model)
    with the bottom's first Linear exposed as :attr:`first`; the same modules, not copies."""

    def __init__(self, model: SharedBottom) -> None:
        super().__init__()
        layers = list(model.bottom)
        if not layers or not isinstance(layers[0], nn.Linear):
            raise ValueError("SharedBottomHead: the bottom must start with a Linear layer")
        self.first = layers[0]
        self.rest = nn.Sequential(*layers[1:])
        self.towers = model.towers

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(embedded))

    def after_first(self, h: torch.Tensor) -> torch.Tensor:
        """The rest of the head from the output of :attr:`first`."""
        hidden = self.rest(h)
        return torch.cat([tower(hidden) for tower in self.towers], dim=1)


class SingleTask(SharedBottom):
    """Shared-Bottom with one task, ``config.task`` (default: the spec's first task); logits [B, 1]."""

    config_class = SingleTaskConfig

    def __init__(self, spec: FeatureSpec, config: SingleTaskConfig) -> None:
        task = spec.task_names[0] if config.task is None else config.task
        if task not in spec.task_names:
            raise ModelConfigError("model.task", f"'{task}' is not a task of the FeatureSpec {spec.task_names}")
        super().__init__(spec, config, [task])
