"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

E expert MLPs read the embedded input; each task k has its own softmax gate g_k(x) over the experts
(eq. 5) and its tower reads f_k(x) = sum_e g_k(x)_e * expert_e(x) (eq. 4).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import HiddenSizes, ModelConfig, PositiveInt
from aptrank.models.layers import Experts, Gate


class MMoEConfig(ModelConfig):
    """The ``model`` section of ``arch: mmoe``: ``num_experts`` expert MLPs of ``expert_hidden`` sizes
    (the last size is the expert output H)."""

    arch: Literal["mmoe"] = "mmoe"
    expert_hidden: HiddenSizes = (128, 64)
    num_experts: PositiveInt = 4


class MMoE(MultiTaskModel):
    """Embedding -> E experts (representation [B, E, H]) -> one gate + tower per task."""

    config_class = MMoEConfig

    def __init__(self, spec: FeatureSpec, config: MMoEConfig) -> None:
        super().__init__(spec, config, spec.task_names)
        d = self.embedding.output_dim
        self.experts = Experts(config.num_experts, d, config.expert_hidden, config.dropout)
        self.gates = nn.ModuleList(Gate(d, config.num_experts) for _ in self.task_names)
        self._add_towers(self.experts.output_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        experts = self.experts(embedded)
        return [Gate.mix(gate(embedded), experts) for gate in self.gates], experts
