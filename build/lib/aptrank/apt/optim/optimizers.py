"""The named optimizers (``apt.OPTIMIZERS``), each a :class:`TaskAwareOptimizer` with its groups.

Standalone use works like any torch optimizer (``AdamW(params)``, ``Muon(params)`` ...); the MTL
engine builds them from :class:`apt.ParamRoles` with :func:`build_optimizer`.

* ``AdamW``: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
* ``AdaTask``: Yang et al., "AdaTask: A Task-Aware Adaptive Learning Rate Approach to Multi-Task
  Learning", AAAI 2023 (code: EnnengYang/AdaTask); per-task moments for the shared parameters.
* ``Muon``: Jordan et al. 2024 (https://kellerjordan.github.io/posts/muon/), with an auxiliary
  AdamW for parameters that are not 2-D hidden weights, in the same object.
* ``AdaTaskMuon``: AdaTask's per-task moments whose normalised updates are summed and then
  orthogonalised by Newton-Schulz for 2-D hidden shared weights (see apt/README.md).
APT (adaptive momentum, direction preservation) is switched per group by ``apt``/``dp``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from aptrank.apt.config import MTLConfig
from aptrank.apt.optim.core import TaskAwareOptimizer
from aptrank.apt.roles import ParamRoles


def _apt_defaults(apt: bool, beta_min: float, beta_max: float | None, dp: bool = False, gamma: float = 0.1) -> dict:
    return {"apt": apt, "beta_min": beta_min, "beta_max": beta_max, "dp": dp, "gamma": gamma}


class AdamW(TaskAwareOptimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        apt: bool = False,
        beta_min: float = 0.5,
        beta_max: float | None = None,
    ) -> None:
        defaults = {"kind": "adam", "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, {**defaults, **_apt_defaults(apt, beta_min, beta_max)})


class AdaTask(TaskAwareOptimizer):
    """Groups default to ``per_task=True``; give task-specific groups ``per_task=False``."""

    def __init__(
        self,
        params: Iterable[Any],
        num_tasks: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        apt: bool = False,
        beta_min: float = 0.5,
        beta_max: float | None = None,
    ) -> None:
        defaults = {
            "kind": "adam",
            "per_task": True,
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, {**defaults, **_apt_defaults(apt, beta_min, beta_max)}, num_tasks)


class Muon(TaskAwareOptimizer):
    """Muon for 2-D parameters, AdamW (``adamw_*``) for the rest, in one object.

    A group without an explicit ``kind`` is split: 2-D parameters get Muon, others AdamW. Give the
    groups that must not use Muon although 2-D (output layers, embeddings) ``kind='adam'``.
    """

    per_task_default = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.1,
        adjust_lr_fn: str | None = None,
        *,
        num_tasks: int = 1,
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        apt: bool = False,
        beta_min: float = 0.5,
        beta_max: float | None = None,
        direction_preservation: bool = False,
        gamma: float = 0.1,
    ) -> None:
        muon = {
            "kind": "muon",
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
            "adjust_lr_fn": adjust_lr_fn,
            "betas": adamw_betas,
            "eps": adamw_eps,
            "per_task": self.per_task_default,
            **_apt_defaults(apt, beta_min, beta_max, direction_preservation, gamma),
        }
        adam = {
            "kind": "adam",
            "lr": adamw_lr,
            "betas": adamw_betas,
            "eps": adamw_eps,
            "weight_decay": adamw_weight_decay,
            "dp": False,
        }
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        split: list[dict] = []
        for g in groups:
            ps = list(g["params"])
            if "kind" in g:
                base = muon if g["kind"] == "muon" else adam
                split.append({**base, **g, "params": ps})
                continue
            two_d = [p for p in ps if p.ndim == 2]
            rest = [p for p in ps if p.ndim != 2]
            if two_d:
                split.append({**muon, **g, "params": two_d})
            if rest:
                split.append({**adam, **{k: v for k, v in g.items() if k not in muon}, "params": rest})
        super().__init__(split, muon, num_tasks)


class AdaTaskMuon(Muon):
    """Muon whose 2-D groups keep AdaTask's per-task moments (``per_task=True`` by default)."""

    per_task_default = True


OPTIMIZERS: dict[str, type[TaskAwareOptimizer]] = {
    "adamw": AdamW,
    "adatask": AdaTask,
    "muon": Muon,
    "adatask_muon": AdaTaskMuon,
}


def build_optimizer(
    cfg: MTLConfig,
    roles: ParamRoles,
    num_tasks: int,
    method_params: list[nn.Parameter] | None = None,
) -> TaskAwareOptimizer:
    """The optimizer ``cfg.optimizer`` over the roles' parameters, grouped by role.

    shared: the MTL treatment (AdaTask moments, APT; Muon for its 2-D weights); task towers: AdamW
    (Muon for their 2-D hidden weights when Muon is on); output layers: AdamW; embeddings: row-wise
    sparse AdamW with ``embedding_lr``/``embedding_weight_decay``; method parameters (UW, GradNorm):
    AdamW without weight decay.
    """
    muon_on, per_task = cfg.uses_muon, cfg.uses_adatask
    adam = {"kind": "adam", "lr": cfg.lr, "betas": cfg.betas, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    m = cfg.muon
    muon = {
        "kind": "muon",
        "lr": m.lr,
        "momentum": m.momentum,
        "nesterov": m.nesterov,
        "ns_steps": m.ns_steps,
        "weight_decay": cfg.weight_decay if m.weight_decay is None else m.weight_decay,
        "adjust_lr_fn": m.adjust_lr_fn,
        "betas": cfg.betas,
        "eps": cfg.eps,
    }
    a = cfg.apt

    def shared_group(params: list[nn.Parameter], base: dict, kind: str) -> dict:
        return {
            **base,
            "params": params,
            "role": "shared",
            "per_task": per_task,
            "apt": a.momentum,
            "beta_min": a.beta_min,
            "beta_max": cfg.apt_beta_max_for(kind),
            "dp": a.direction_preservation and kind == "muon",
            "gamma": a.gamma,
            "names": [roles.name(p, f"shared.{i}") for i, p in enumerate(params)],
        }

    groups: list[dict] = []
    shared = list(dict.fromkeys(roles.shared))
    shared_muon = [p for p in shared if muon_on and p.ndim == 2]
    shared_adam = [p for p in shared if not (muon_on and p.ndim == 2)]
    if shared_muon:
        groups.append(shared_group(shared_muon, muon, "muon"))
    if shared_adam:
        groups.append(shared_group(shared_adam, adam, "adam"))
    output_ids = {id(p) for p in roles.output}
    towers = roles.task_params()
    tower_muon = [p for p in towers if muon_on and p.ndim == 2 and id(p) not in output_ids]
    tower_adam = [p for p in towers if not (muon_on and p.ndim == 2 and id(p) not in output_ids)]
    if tower_muon:
        groups.append({**muon, "params": tower_muon, "role": "task"})
    if tower_adam:
        groups.append({**adam, "params": tower_adam, "role": "task"})
    if roles.embeddings:
        lr = cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr
        groups.append(
            {
                **adam,
                "params": list(roles.embeddings),
                "role": "embedding",
                "table_optimizer": cfg.embedding_optimizer,
                "lr": lr,
                "weight_decay": cfg.embedding_weight_decay,
            }
        )
    if method_params:
        groups.append({**adam, "params": list(method_params), "role": "method", "weight_decay": 0.0})
    return OPTIMIZERS[cfg.optimizer].from_groups(groups, adam, num_tasks)
