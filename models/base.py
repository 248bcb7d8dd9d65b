"""MultiTaskModel: what every ranker shares (embedding layer, one tower per task, parameter roles).

A concrete architecture only says how the embedded input becomes one input per tower
(``body``) and, optionally, the export-time form of its dense part (``export_head``); the training
path, the export path (``models.export``) and the task-aware optimizer's views
(``forward_with_intermediates``, ``param_roles``) are written once here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.config import ModelConfig
from aptrank.models.embedding import SpecEmbedding
from aptrank.models.feature_batch import FeatureBatch
from aptrank.models.layers import Tower
from aptrank.models.task_dag import TaskDag, TaskDependency

ParamRoles = dict[str, list[nn.Parameter] | list[list[nn.Parameter]]]


class MultiTaskModel(nn.Module, ABC):
    """Embedding -> ``body`` (architecture) -> one ``Tower`` per task -> logits [B, K].

    ``task_dag`` (:class:`~aptrank.models.task_dag.TaskDag`, set by :meth:`set_task_dependencies`)
    turns the towers' logits into entire-space ones (ESMM); without dependencies it is the identity.

    Subclasses build their dense part in ``__init__`` after calling ``super().__init__`` and then
    call ``_add_towers(input_dim)``. Each architecture declares its ``model`` config section
    (``config_class``, a :class:`ModelConfig` with its own fields and ``arch`` tag).
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, spec: FeatureSpec, config: ModelConfig, task_names: list[str]) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        self.task_names: list[str] = list(task_names)
        self.embedding = SpecEmbedding(
            spec, config.embedding_dim, sparse=config.sparse_embeddings, dense_encoding=config.dense_encoding
        )
        self.towers = nn.ModuleList()
        self.task_dag = TaskDag(self.task_names, spec.task_names)

    def set_task_dependencies(self, dependencies: Mapping[str, TaskDependency]) -> None:
        """Use the job's ``tasks`` (child -> ``{given: parent}``): a child's tower then predicts
        p(child | parent) and :meth:`forward` gives entire-space logits (``models.task_dag``).
        Refuses a task or parent the FeatureSpec does not have (``ModelConfigError``)."""
        self.task_dag = TaskDag(self.task_names, self.spec.task_names, dependencies)

    @property
    def label_columns(self) -> list[int]:
        """Column of each model task in the spec's label matrix [B, K_spec] (``labels[:, cols]``)."""
        return [self.spec.task_names.index(t) for t in self.task_names]

    def _add_towers(self, input_dim: int) -> None:
        self.towers.extend(Tower(input_dim, self.config.tower_hidden, self.config.dropout) for _ in self.task_names)

    @abstractmethod
    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Embedded input [B, D] -> (one tower input per task, the shared representation that the
        towers or gates consume: [B, H] for a shared bottom, stacked experts [B, E, H] for MoE)."""

    def task_logits(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(one [B, 1] logit tensor per task, each from its own tower; the representation)."""
        tower_inputs, representation = self.body(embedded)
        return [tower(x) for tower, x in zip(self.towers, tower_inputs, strict=True)], representation

    def head(self, embedded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense part from the embedded input: (the towers' logits [B, K], representation)."""
        logits, representation = self.task_logits(embedded)
        return torch.cat(logits, dim=1), representation

    def forward_with_intermediates(self, batch: FeatureBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(entire-space logits [B, K], embedded [B, D], shared representation) on the training path
        (the towers' logits when the tasks have no dependencies)."""
        embedded = self.embedding(batch)
        logits, representation = self.head(embedded)
        return self.task_dag.entire_space_logits(logits), embedded, representation

    def forward_per_task(self, batch: FeatureBatch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(per-task logits [B, 1] each, embedded, representation): the training path when each task's
        loss is its own graph root, so a per-task backward pass runs through that task's tower only
        (``apt.MultiTaskOptimizer.step`` with a list of losses). These are the towers' logits: a
        child's is the conditional one; ``pipeline.objective.task_losses`` applies ``task_dag``."""
        embedded = self.embedding(batch)
        logits, representation = self.task_logits(embedded)
        return logits, embedded, representation

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        return self.forward_with_intermediates(batch)[0]

    def export_head(self) -> nn.Module:
        """The dense part as the ONNX export runs it: ``forward(embedded) -> tower logits [B, K]``, the
        same function as :meth:`head` (the export applies ``task_dag.probabilities`` after it). An
        architecture overrides this with a faster form (fused GEMMs); when the returned module has a
        Linear ``first`` and a method ``after_first(h)`` (the rest of the head from ``first``'s
        output), the export may fold small embedding tables into ``first`` (``models.export.fold``).
        Default: the model's own head. Build it after training: fused forms hold copies of the weights."""
        return ModelHead(self)

    def param_roles(self) -> ParamRoles:
        """Parameters by role for task-aware optimisation.

        ``embeddings``: the table weights; ``task``: each tower's parameters (one list per task);
        ``output``: the towers' final Linear parameters (a subset of ``task``); ``shared``: every other
        parameter (bottom, experts, gates, PLE's task-specific experts, the dense features' encoder).
        Every parameter is in exactly one of shared / embeddings / task.
        """
        embeddings = self.embedding.table_parameters()
        task = [list(tower.parameters()) for tower in self.towers]
        output = [p for tower in self.towers for p in tower.out.parameters()]
        taken = {id(p) for p in embeddings} | {id(p) for params in task for p in params}
        shared = [p for p in self.parameters() if id(p) not in taken]
        return {"shared": shared, "embeddings": embeddings, "task": task, "output": output}

    def param_role_names(self) -> dict[str, list[str] | list[list[str]]]:
        """``param_roles`` with parameter names instead of tensors (for logs and diagnostics)."""
        names = {id(p): n for n, p in self.named_parameters()}
        roles = self.param_roles()
        return {
            role: [[names[id(p)] for p in group] for group in params]
            if role == "task"
            else [names[id(p)] for p in params]
            for role, params in roles.items()
        }


class ModelHead(nn.Module):
    """``forward(embedded) -> logits [B, K]``: a model's own :meth:`MultiTaskModel.head`, for export."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        return self.model.head(embedded)[0]
