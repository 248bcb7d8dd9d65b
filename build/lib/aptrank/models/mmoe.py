"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

E expert MLPs read the embedded input; each task k has its own softmax gate g_k(x) over the experts
(eq. 5) and its tower reads f_k(x) = sum_e g_k(x)_e * expert_e(x) (eq. 4).
"""

from __future__ import annotations

import torch
from torch import nn

from aptrank.data.spec import FeatureSpec
from aptrank.models.base import MultiTaskModel
from aptrank.models.config import ModelConfig
from aptrank.models.layers import Experts, Gate


class MMoE(MultiTaskModel):
    """Embedding -> E experts (representation [B, E, H]) -> one gate + tower per task."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig) -> None:
        super().__init__(spec, config, spec.task_names)
        d = self.embedding.output_dim
        self.experts = Experts(config.num_experts, d, config.expert_hidden, config.dropout)
        self.gates = nn.ModuleList(Gate(d, config.num_experts) for _ in self.task_names)
        self._add_towers(self.experts.output_dim)

    def body(self, embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        experts = self.experts(embedded)
        return [Gate.mix(gate(embedded), experts) for gate in self.gates], experts
