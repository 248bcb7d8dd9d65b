"""ParamRoles: which parameters get which treatment.

``shared``: dense shared parameters (bottom, experts, gates): per-task gradients, aggregation, APT.
``embeddings``: embedding-table weights (usually sparse gradients): summed-loss gradient, row-wise Adam.
``task``: one list per task (its tower); ``output``: the towers' final-layer parameters (may overlap
``task``; never Muon). ``names`` optionally maps ``id(param)`` to a readable name for diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class ParamRoles:
    shared: list[nn.Parameter]
    embeddings: list[nn.Parameter] = field(default_factory=list)
    task: list[list[nn.Parameter]] = field(default_factory=list)
    output: list[nn.Parameter] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    external_embeddings: bool = False
    """Tables are updated outside apt (e.g. TorchRec's fused kernels under DistributedModelParallel):
    ``embeddings`` is empty, but the engine still sends the summed gradient back through
    ``embedded`` so the fused backward updates them."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], names: Mapping[int, str] | None = None) -> ParamRoles:
        """From a model's ``param_roles()`` dict (keys shared, embeddings, task, output)."""
        return cls(
            shared=list(d.get("shared", [])),
            embeddings=list(d.get("embeddings", [])),
            task=[list(t) for t in d.get("task", [])],
            output=list(d.get("output", [])),
            names=dict(names or {}),
        )

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamRoles:
        """``model.param_roles()`` with names taken from ``model.named_parameters()``."""
        names = {id(p): n for n, p in model.named_parameters()}
        return cls.from_dict(model.param_roles(), names)

    def task_params(self) -> list[nn.Parameter]:
        """Every tower parameter once (``task`` lists, then ``output`` ones not already listed)."""
        return _unique([p for ps in self.task for p in ps] + list(self.output))

    def name(self, p: nn.Parameter, fallback: str) -> str:
        return self.names.get(id(p), fallback)

    def validate(self, num_tasks: int) -> None:
        if not self.shared and not self.embeddings and not self.external_embeddings:
            raise ValueError("ParamRoles: no shared parameters")
        if self.task and len(self.task) != num_tasks:
            raise ValueError(f"ParamRoles: {len(self.task)} task lists for {num_tasks} tasks")
        groups = {
            "shared": _unique(self.shared),
            "embeddings": _unique(self.embeddings),
            "task": self.task_params(),
        }
        seen: dict[int, str] = {}
        for role, params in groups.items():
            for p in params:
                if id(p) in seen:
                    raise ValueError(f"ParamRoles: a parameter is both {seen[id(p)]} and {role}")
                seen[id(p)] = role


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    out, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
