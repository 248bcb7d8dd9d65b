"""TaskAwareOptimizer: AdamW, AdaTask and Muon (with an auxiliary AdamW) in one object, plus APT.

Each param group has a ``kind`` and flags:

* ``kind='adam'``: AdamW (decoupled weight decay), the arithmetic of ``torch.optim.AdamW``'s
  single-tensor path; sparse gradients (tables) get a row-wise lazy AdamW (``sparse_adam``).
* ``kind='muon'``: Muon on 2-D weights, the arithmetic of ``torch.optim.Muon``; the step's matrices
  are orthogonalised in same-shape stacks (``newton_schulz``).
* ``per_task=True`` (AdaTask, Yang et al. AAAI 2023): a first and second moment per task,
  m_k <- b1 m_k + (1-b1) u_k, v_k <- b2 v_k + (1-b2) u_k^2, where u_k is task k's contribution to the
  written gradient (``task_grads`` / ``task_mix``, see :meth:`step`); the update is
  sum_k lr m_k_hat / (sqrt(v_k_hat) + eps), with decoupled decay once per step (the authors' code
  has none). With ``kind='muon'`` the summed normalised updates are orthogonalised (AdaTask + Muon).
* ``apt=True``: APT's adaptive momentum (``adaptive_momentum``); ``dp=True`` (Muon only): APT's
  direction preservation (``direction_preservation``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from aptrank.apt.optim import rowwise_adagrad, sparse_adam
from aptrank.apt.optim.adaptive_momentum import adaptive_betas, beta_product
from aptrank.apt.optim.diagnostics import StepDiagnostics
from aptrank.apt.optim.direction_preservation import preserve_directions
from aptrank.apt.optim.newton_schulz import NS_COEFFICIENTS, NS_EPS, adjust_lr, orthogonalise_all

GROUP_DEFAULTS: dict[str, Any] = {
    "kind": "adam",
    "per_task": False,
    "role": "",
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    # Muon
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "ns_coefficients": NS_COEFFICIENTS,
    "ns_eps": NS_EPS,
    "adjust_lr_fn": None,
    # APT
    "apt": False,
    "beta_min": 0.5,
    "beta_max": None,
    "dp": False,
    "gamma": 0.1,
    # diagnostics
    "names": None,
}


class TaskAwareOptimizer(Optimizer):
    """See the module docstring. ``num_tasks`` is K for per-task groups."""

    def __init__(self, params: Iterable[Any], defaults: Mapping[str, Any], num_tasks: int = 1) -> None:
        merged = {**GROUP_DEFAULTS, **defaults}
        self.num_tasks = num_tasks
        super().__init__(params, merged)
        for group in self.param_groups:
            if group["kind"] not in ("adam", "muon"):
                raise ValueError(f"unknown param group kind {group['kind']!r}")
            if group["kind"] == "muon":
                for p in group["params"]:
                    if p.ndim != 2:
                        raise ValueError(f"Muon only updates 2-D parameters, got shape {tuple(p.shape)}")
            if group["dp"] and group["kind"] != "muon":
                raise ValueError("direction preservation needs kind='muon'")
            if group["apt"] and group["beta_max"] is not None and group["beta_min"] > group["beta_max"]:
                raise ValueError("beta_min > beta_max")

    @classmethod
    def from_groups(cls, groups: list[dict], defaults: Mapping[str, Any], num_tasks: int) -> TaskAwareOptimizer:
        """An instance of ``cls`` over ready-made param groups (used by ``build_optimizer``)."""
        obj = cls.__new__(cls)
        TaskAwareOptimizer.__init__(obj, groups, defaults, num_tasks)
        return obj

    # ---- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _base_beta(group: Mapping[str, Any]) -> float:
        return group["momentum"] if group["kind"] == "muon" and not group["per_task"] else group["betas"][0]

    def _beta_bounds(self, group: Mapping[str, Any]) -> tuple[float, float]:
        hi = group["beta_max"] if group["beta_max"] is not None else self._base_beta(group)
        return group["beta_min"], hi

    def _init_state(self, p: Tensor, group: Mapping[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if state:
            return state
        k = self.num_tasks
        if group.get("table_optimizer") == "rowwise_adagrad":
            rowwise_adagrad.init_state(p, state)
        elif group["per_task"]:
            state["step"] = 0
            state["exp_avg"] = torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device)
            state["exp_avg_sq"] = torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device)
            state["beta1_prod"] = [1.0] * k
            state["beta1_const"] = [None] * k
        elif group["kind"] == "muon":
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["beta1_prod"] = 1.0
            state["beta1_const"] = None
        return state

    def _task_updates(self, p: Tensor, task_grads: Mapping[Tensor, Tensor] | None, task_mix: Tensor | None) -> Tensor:
        """u [K, *shape]: task k's contribution to the written gradient (mix @ G, or G)."""
        g = task_grads.get(p) if task_grads is not None else None
        if g is None:
            if self.num_tasks == 1:
                return p.grad.unsqueeze(0)
            raise ValueError("a per-task parameter group needs task_grads at each step")
        if task_mix is None:
            return g
        return (task_mix.to(g) @ g.reshape(g.shape[0], -1)).view_as(g)

    # ---- APT: all cosines in one sync ----------------------------------------------------------
    def _apt_betas(self, work: list[tuple[Tensor, dict, Tensor | None]]) -> dict[int, list[float]]:
        ids, pairs = [], []
        for p, group, u in work:
            if not group["apt"] or p.grad is None or p.grad.is_sparse:
                continue
            state = self._init_state(p, group)
            if group["per_task"]:
                m, d = state["exp_avg"], u
            else:
                buf = state["momentum_buffer"] if group["kind"] == "muon" else state["exp_avg"]
                m, d = buf.unsqueeze(0), p.grad.unsqueeze(0)
            ids.append(id(p))
            pairs.append((m, d, *self._beta_bounds(group)))
        return dict(zip(ids, adaptive_betas(pairs), strict=True))

    # ---- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self,
        closure: Any = None,
        *,
        task_grads: Mapping[Tensor, Tensor] | None = None,
        task_mix: Tensor | None = None,
        diagnostics: bool = False,
    ) -> dict[str, float]:
        """One update from ``p.grad``.

        ``task_grads``: param -> [K, *shape] per-task gradients G of this step (needed by per-task
        and direction-preservation groups when K > 1). ``task_mix`` [K, K]: task k's contribution to
        the written gradient is u_k = (task_mix @ G)_k (None: u = G). Returns diagnostics (empty
        unless ``diagnostics``) for the groups with role 'shared'.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        del loss
        work: list[tuple[Tensor, dict, Tensor | None]] = []
        names: dict[int, str] = {}
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                u = self._task_updates(p, task_grads, task_mix) if group["per_task"] else None
                work.append((p, group, u))
                names[id(p)] = group["names"][i] if group["names"] else f"{group['role'] or 'group'}{gi}.{i}"
        betas = self._apt_betas(work)
        diag = StepDiagnostics() if diagnostics else None
        pending: list[tuple[Tensor, dict, Tensor]] = []  # Muon: (param, group, matrix to orthogonalise)
        for p, group, u in work:
            state = self._init_state(p, group)
            b = betas.get(id(p))
            g_tasks = task_grads.get(p) if (group["dp"] and task_grads is not None) else None
            matrix: Tensor | None = None
            if group["per_task"]:
                matrix = self._per_task_update(p, group, state, u, b, diag, names[id(p)])
            elif group["kind"] == "muon":
                matrix = self._muon_momentum(p, group, state, b[0] if b else group["momentum"], diag)
            elif group.get("table_optimizer") == "rowwise_adagrad":
                rowwise_adagrad.update(p, group, state)
            elif p.grad.is_sparse:
                sparse_adam.update(p, group, state)
            else:
                self._adam_update(p, group, state, b[0] if b else group["betas"][0], diag)
            if matrix is not None:
                if group["dp"]:
                    matrix = preserve_directions(matrix, g_tasks, group["gamma"])
                pending.append((p, group, matrix))
        self._orthogonal_updates(pending, diag)
        return diag.result() if diag is not None else {}

    def _adam_update(self, p: Tensor, group: dict, state: dict, beta1: float, diag: StepDiagnostics | None) -> None:
        grad = p.grad
        lr, (_, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"]
        if wd != 0:
            p.mul_(1 - lr * wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta_product(state, beta1, step, None)
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        if diag is not None and group["role"] == "shared":
            diag.add_momentum((1 - beta1) * grad, exp_avg, beta1)
            diag.add_update(grad, exp_avg / denom * step_size)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    @staticmethod
    def _muon_momentum(p: Tensor, group: dict, state: dict, momentum: float, diag: StepDiagnostics | None) -> Tensor:
        """Muon's momentum buffer update; returns the (Nesterov) matrix to orthogonalise."""
        grad = p.grad
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - momentum)
        if diag is not None and group["role"] == "shared":
            diag.add_momentum((1 - momentum) * grad, buf, momentum)
        return grad.lerp(buf, momentum) if group["nesterov"] else buf

    @staticmethod
    def _orthogonal_updates(pending: list[tuple[Tensor, dict, Tensor]], diag: StepDiagnostics | None) -> None:
        """theta <- theta (1 - lr wd) - lr' NS(M) for every Muon matrix of the step; Newton-Schulz runs
        once per stack of same-shape matrices (bit-identical to one call per matrix)."""
        if not pending:
            return
        orthos = orthogonalise_all(
            [m for _, _, m in pending],
            [(g["ns_coefficients"], g["ns_steps"], g["ns_eps"]) for _, g, _ in pending],
        )
        for (p, group, _), ortho in zip(pending, orthos, strict=True):
            lr = group["lr"]
            adjusted_lr = adjust_lr(lr, group["adjust_lr_fn"], p.shape)
            if diag is not None and group["role"] == "shared":
                diag.add_update(p.grad, ortho.to(p.dtype) * adjusted_lr)
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(ortho, alpha=-adjusted_lr)

    def _per_task_update(
        self,
        p: Tensor,
        group: dict,
        state: dict,
        u: Tensor,
        betas: list[float] | None,
        diag: StepDiagnostics | None,
        name: str,
    ) -> Tensor | None:
        """AdaTask's per-task moments. Adam kind: applies sum_k lr m_k_hat / (sqrt(v_k_hat) + eps) and
        returns None; Muon kind: returns that sum (without lr) for orthogonalisation."""
        k = u.shape[0]
        if k != self.num_tasks:
            raise ValueError(f"per-task gradients for {k} tasks, optimizer built for {self.num_tasks}")
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        betas = betas or [beta1] * k
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"]
        is_muon = group["kind"] == "muon"
        if wd != 0 and not is_muon:
            p.mul_(1 - lr * wd)
        if all(b == betas[0] for b in betas):
            exp_avg.lerp_(u, 1 - betas[0])
        else:
            for i in range(k):
                exp_avg[i].lerp_(u[i], 1 - betas[i])
        exp_avg_sq.mul_(beta2).addcmul_(u, u, value=1 - beta2)
        bias_correction2 = 1 - beta2**step
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        step_sizes = [lr / (1 - beta_product(state, betas[i], step, i)) for i in range(k)]
        shared_diag = diag if diag is not None and group["role"] == "shared" else None
        if shared_diag is not None:
            for i in range(k):
                shared_diag.add_momentum((1 - betas[i]) * u[i], exp_avg[i], betas[i])
            shared_diag.add_task_updates(name, state, [exp_avg[i] / denom[i] * step_sizes[i] for i in range(k)])
        if not is_muon:
            if shared_diag is not None:
                shared_diag.add_update(p.grad, sum(exp_avg[i] / denom[i] * step_sizes[i] for i in range(k)))
            for i in range(k):
                p.addcdiv_(exp_avg[i], denom[i], value=-step_sizes[i])
            return None
        # AdaTask + Muon: the sum of the per-task normalised updates is orthogonalised
        # (lr is applied by Muon's shape-adjusted rate; 1/bias_correction1 stays per task).
        return sum(exp_avg[i] / denom[i] * (step_sizes[i] / lr) for i in range(k))
