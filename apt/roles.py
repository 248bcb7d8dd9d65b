"""ParamRoles: which parameters get which treatment.

``shared``: dense shared parameters (bottom, experts, gates): per-task gradients, aggregation, APT.
``embeddings``: embedding-table weights (usually sparse gradients): summed-loss gradient, row-wise Adam.
``task``: one list per task (its tower); ``output``: the towers' final-layer parameters (may overlap
``task``; never Muon). ``names`` optionally maps ``id(param)`` to a readable name for diagnostics.

:meth:`ParamRoles.from_model` takes any ``nn.Module``: its ``param_roles()`` when it has one, else
name prefixes per role or a callable ``(name, param) -> role``; every trainable parameter must land
in a role, and a sparse embedding table must not be ``shared`` (each mistake is one ``ValueError``
naming the parameter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: ``(name, param) -> 'shared' | 'embeddings' | task index (int) | None`` (None: no role, an error)
Assign = Callable[[str, nn.Parameter], str | int | None]
PREFIX_ROLES = ("shared", "embeddings", "task", "output")


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
    sparse_tables: set[int] = field(default_factory=set)
    """``id`` of the weights of sparse embedding modules (from :meth:`from_model`): never ``shared``."""

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
    def from_model(cls, model: nn.Module, roles: Mapping[str, Any] | Assign | None = None) -> ParamRoles:
        """Roles of ``model``'s parameters, named from ``model.named_parameters()``.

        ``roles`` None: ``model.param_roles()``. A mapping of name prefixes:
        ``{"shared": ["experts.", "gates."], "embeddings": ["tables."], "task": [["towers.0."],
        ["towers.1."]], "output": ["towers.0.2.", "towers.1.2."]}`` (``output`` optional, a subset of
        the towers). A callable ``(name, param) -> 'shared' | 'embeddings' | k`` (k: task index).
        Raises ``ValueError`` naming the parameter that lands in no role or the argument that is wrong.
        """
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if roles is None:
            if not callable(getattr(model, "param_roles", None)):
                raise ValueError(
                    f"ParamRoles.from_model: {type(model).__name__} has no param_roles() method; pass "
                    "roles={'shared': [prefixes], 'embeddings': [prefixes], 'task': [[prefixes of task 0], ...]} "
                    "or a callable (name, param) -> 'shared' | 'embeddings' | task index"
                )
            d = model.param_roles()
        elif callable(roles):
            d = _by_callable(named, roles)
        elif isinstance(roles, Mapping):
            d = _by_prefixes(named, roles)
        else:
            raise ValueError(f"ParamRoles.from_model: roles must be None, a mapping or a callable, got {roles!r}")
        out = cls.from_dict(d, {id(p): n for n, p in model.named_parameters()})
        out.sparse_tables = {
            id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
        }
        placed = {id(p) for p in [*out.shared, *out.embeddings, *out.task_params()]}
        for n, p in named:
            if id(p) not in placed:
                raise ValueError(f"ParamRoles: parameter {n!r} is in no role (shared, embeddings or a task's tower)")
        return out

    def task_params(self) -> list[nn.Parameter]:
        """Every tower parameter once (``task`` lists, then ``output`` ones not already listed)."""
        return _unique([p for ps in self.task for p in ps] + list(self.output))

    def name(self, p: nn.Parameter, fallback: str) -> str:
        return self.names.get(id(p), fallback)

    def validate(self, num_tasks: int) -> None:
        if not self.shared:
            raise ValueError(
                "ParamRoles: argument 'shared' is empty; apt combines the task gradients of the dense shared "
                "parameters (bottom, experts, gates), so name at least one"
            )
        if self.task and len(self.task) != num_tasks:
            raise ValueError(f"ParamRoles: {len(self.task)} task lists for {num_tasks} tasks")
        for i, p in enumerate(self.shared):
            if id(p) in self.sparse_tables:
                raise ValueError(
                    f"ParamRoles: sparse embedding table {self.name(p, f'shared[{i}]')!r} is in 'shared'; put it "
                    "in 'embeddings' (shared parameters get dense per-task gradients)"
                )
        groups = {
            "shared": _unique(self.shared),
            "embeddings": _unique(self.embeddings),
            "task": self.task_params(),
        }
        seen: dict[int, str] = {}
        for role, params in groups.items():
            for i, p in enumerate(params):
                if id(p) in seen:
                    raise ValueError(
                        f"ParamRoles: parameter {self.name(p, f'{role}[{i}]')!r} is both {seen[id(p)]} and {role}"
                    )
                seen[id(p)] = role


def _by_prefixes(named: Sequence[tuple[str, nn.Parameter]], roles: Mapping[str, Any]) -> dict[str, Any]:
    for key in roles:
        if key not in PREFIX_ROLES:
            raise ValueError(f"ParamRoles.from_model: unknown role {key!r} in roles; allowed: {list(PREFIX_ROLES)}")
    task_prefixes = roles.get("task", [])
    if isinstance(task_prefixes, str) or any(isinstance(t, str) for t in task_prefixes):
        raise ValueError("ParamRoles.from_model: roles['task'] must be one list of prefixes per task")

    def pick(prefixes: Sequence[str]) -> list[nn.Parameter]:
        if isinstance(prefixes, str):
            raise ValueError(f"ParamRoles.from_model: prefixes must be a list of strings, got {prefixes!r}")
        return [p for n, p in named if any(n.startswith(pre) for pre in prefixes)]

    return {
        "shared": pick(roles.get("shared", [])),
        "embeddings": pick(roles.get("embeddings", [])),
        "task": [pick(t) for t in task_prefixes],
        "output": pick(roles.get("output", [])),
    }


def _by_callable(named: Sequence[tuple[str, nn.Parameter]], assign: Assign) -> dict[str, Any]:
    d: dict[str, Any] = {"shared": [], "embeddings": [], "task": []}
    for n, p in named:
        role = assign(n, p)
        if role in ("shared", "embeddings"):
            d[role].append(p)
        elif isinstance(role, int) and not isinstance(role, bool) and role >= 0:
            d["task"].extend([] for _ in range(role + 1 - len(d["task"])))
            d["task"][role].append(p)
        elif role is not None:
            raise ValueError(
                f"ParamRoles.from_model: roles({n!r}) returned {role!r}; "
                "expected 'shared', 'embeddings' or a task index"
            )
    return d


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    out, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
