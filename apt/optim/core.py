"""TaskAwareOptimizer: AdamW, AdaTask and Muon (with an auxiliary AdamW) in one object, plus APT.

Each param group has a ``kind`` and flags:

* ``kind='adam'``: AdamW (decoupled weight decay), the same arithmetic as ``torch.optim.AdamW``'s
  single-tensor path. Sparse gradients (embedding tables) get a row-wise lazy AdamW: only the rows
  in the gradient are read and written; the step count (bias correction) is per table.
* ``kind='muon'``: Muon on 2-D weights, the same arithmetic as ``torch.optim.Muon``
  (EMA momentum buffer, optional Nesterov, Newton-Schulz in bfloat16, shape-adjusted lr).
* ``per_task=True`` (AdaTask, Yang et al. AAAI 2023): a first and second moment per task,
  m_k <- b1 m_k + (1-b1) u_k, v_k <- b2 v_k + (1-b2) u_k^2, where u_k is task k's contribution to the
  written gradient (``task_grads`` / ``task_mix``, see :meth:`step`); the update is
  sum_k lr m_k_hat / (sqrt(v_k_hat) + eps). The authors' code ignores weight decay; we apply
  decoupled (AdamW) decay once per step: theta <- theta (1 - lr wd). With ``kind='muon'`` too, the
  per-task normalised updates are summed and that sum is orthogonalised (AdaTask + Muon).
* ``apt=True`` (APT adaptive momentum, our formulation, ALGORITHMS.md): per tensor (per task for
  per-task moments) s_t = cos(m_{t-1}, d_t), beta_t = beta_min + (beta_max - beta_min)(1 + s_t)/2,
  m_t = beta_t m_{t-1} + (1 - beta_t) d_t. Adam's bias correction uses the running product of beta_t
  (computed as beta^t while beta_t has been constant, so beta_min = beta_max is exactly the base
  optimizer). s_t = 0 while m_{t-1} = 0.
* ``dp=True`` (APT direction preservation, Muon only): before Newton-Schulz,
  M' = M / ||M||_F + gamma * mean_k G_k / ||G_k||_F with G_k the per-task gradients of this step.

All per-tensor scalars (betas, bias corrections) are Python floats: one device sync per step
collects every cosine APT needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from apt.optim import rowwise_adagrad
from apt.optim.newton_schulz import NS_COEFFICIENTS, NS_EPS, adjust_lr, zeropower_via_newtonschulz

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

AU_DECAY = 0.9  # EMA of AdaTask's per-task squared update (over diagnostic steps)


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

    @staticmethod
    def _power(state: dict[str, Any], beta: float, step: int, index: int | None) -> float:
        """prod_{tau <= t} beta_tau, updated with this step's beta (beta**t while constant)."""
        prods, consts = state["beta1_prod"], state["beta1_const"]
        prod = (prods if index is None else prods[index]) * beta
        const = consts if index is None else consts[index]
        const = beta if step == 1 or const == beta else None
        if index is None:
            state["beta1_prod"], state["beta1_const"] = prod, const
        else:
            prods[index], consts[index] = prod, const
        return beta**step if const is not None else prod

    # ---- APT: all cosines in one sync ----------------------------------------------------------
    def _apt_betas(self, work: list[tuple[Tensor, dict, Tensor | None]]) -> dict[int, list[float]]:
        pairs: list[tuple[int, Tensor, Tensor]] = []  # (param id, moments [n_k, ...], d [n_k, ...])
        groups: dict[int, dict] = {}
        for p, group, u in work:
            if not group["apt"] or p.grad is None or p.grad.is_sparse:
                continue
            state = self._init_state(p, group)
            if group["per_task"]:
                m, d = state["exp_avg"], u
            elif group["kind"] == "muon":
                m, d = state["momentum_buffer"].unsqueeze(0), p.grad.unsqueeze(0)
            else:
                m, d = state["exp_avg"].unsqueeze(0), p.grad.unsqueeze(0)
            pairs.append((id(p), m, d))
            groups[id(p)] = group
        if not pairs:
            return {}
        rows = []
        for _, m, d in pairs:
            mf, df = m.reshape(m.shape[0], -1).float(), d.reshape(d.shape[0], -1).float()
            rows.append(torch.stack([(mf * df).sum(1), mf.norm(dim=1), df.norm(dim=1)], dim=1))
        stats = torch.cat([r.cpu() for r in rows]).tolist()
        out: dict[int, list[float]] = {}
        i = 0
        for pid, m, _ in pairs:
            lo, hi = self._beta_bounds(groups[pid])
            betas = []
            for _ in range(m.shape[0]):
                dot, nm, nd = stats[i]
                i += 1
                s = dot / (nm * nd) if nm > 0 and nd > 0 else 0.0
                s = min(1.0, max(-1.0, s))
                betas.append(lo + (hi - lo) * (1.0 + s) / 2.0)
            out[pid] = betas
        return out

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
        diag = _Diagnostics() if diagnostics else None
        for p, group, u in work:
            state = self._init_state(p, group)
            b = betas.get(id(p))
            g_tasks = task_grads.get(p) if (group["dp"] and task_grads is not None) else None
            if group["per_task"]:
                self._per_task_update(p, group, state, u, b, g_tasks, diag, names[id(p)])
            elif group["kind"] == "muon":
                self._muon_update(p, group, state, b[0] if b else group["momentum"], g_tasks, diag)
            elif group.get("table_optimizer") == "rowwise_adagrad":
                rowwise_adagrad.update(p, group, state)
            elif p.grad.is_sparse:
                self._sparse_adam_update(p, group, state)
            else:
                self._adam_update(p, group, state, b[0] if b else group["betas"][0], diag)
        return diag.result() if diag is not None else {}

    def _adam_update(self, p: Tensor, group: dict, state: dict, beta1: float, diag: _Diagnostics | None) -> None:
        grad = p.grad
        lr, (_, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"]
        if wd != 0:
            p.mul_(1 - lr * wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - self._power(state, beta1, step, None)
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        if diag is not None and group["role"] == "shared":
            diag.add_momentum((1 - beta1) * grad, exp_avg, beta1)
            diag.add_update(grad, exp_avg / denom * step_size)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def _sparse_adam_update(self, p: Tensor, group: dict, state: dict) -> None:
        """Row-wise lazy AdamW: the dense AdamW arithmetic on the gradient's rows only."""
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        state["step"] += 1
        step = state["step"]
        exp_avg = state["exp_avg"].index_select(0, rows)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
        param = p.index_select(0, rows)
        if wd != 0:
            param.mul_(1 - lr * wd)
        exp_avg.lerp_(values, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        p.index_copy_(0, rows, param)

    def _muon_update(
        self,
        p: Tensor,
        group: dict,
        state: dict,
        momentum: float,
        g_tasks: Tensor | None,
        diag: _Diagnostics | None,
    ) -> None:
        grad = p.grad
        lr, wd = group["lr"], group["weight_decay"]
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - momentum)
        update = grad.lerp(buf, momentum) if group["nesterov"] else buf
        if group["dp"]:
            update = _preserve_directions(update, g_tasks, group["gamma"])
        ortho = zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"], group["ns_eps"])
        adjusted_lr = adjust_lr(lr, group["adjust_lr_fn"], p.shape)
        if diag is not None and group["role"] == "shared":
            diag.add_momentum((1 - momentum) * grad, buf, momentum)
            diag.add_update(grad, ortho.to(grad.dtype) * adjusted_lr)
        p.mul_(1 - lr * wd)
        p.add_(ortho, alpha=-adjusted_lr)

    def _per_task_update(
        self,
        p: Tensor,
        group: dict,
        state: dict,
        u: Tensor,
        betas: list[float] | None,
        g_tasks: Tensor | None,
        diag: _Diagnostics | None,
        name: str,
    ) -> None:
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
        step_sizes = [lr / (1 - self._power(state, betas[i], step, i)) for i in range(k)]
        if diag is not None and group["role"] == "shared":
            for i in range(k):
                diag.add_momentum((1 - betas[i]) * u[i], exp_avg[i], betas[i])
            diag.add_task_updates(name, state, [exp_avg[i] / denom[i] * step_sizes[i] for i in range(k)])
        if not is_muon:
            if diag is not None and group["role"] == "shared":
                diag.add_update(p.grad, sum(exp_avg[i] / denom[i] * step_sizes[i] for i in range(k)))
            for i in range(k):
                p.addcdiv_(exp_avg[i], denom[i], value=-step_sizes[i])
            return
        # AdaTask + Muon: orthogonalise the sum of the per-task normalised updates
        # (lr is applied by Muon's shape-adjusted rate; 1/bias_correction1 stays per task).
        total = sum(exp_avg[i] / denom[i] * (step_sizes[i] / lr) for i in range(k))
        if group["dp"]:
            total = _preserve_directions(total, g_tasks, group["gamma"])
        ortho = zeropower_via_newtonschulz(total, group["ns_coefficients"], group["ns_steps"], group["ns_eps"])
        adjusted_lr = adjust_lr(lr, group["adjust_lr_fn"], p.shape)
        if diag is not None and group["role"] == "shared":
            diag.add_update(p.grad, ortho.to(p.dtype) * adjusted_lr)
        p.mul_(1 - lr * wd)
        p.add_(ortho, alpha=-adjusted_lr)


def _preserve_directions(m: Tensor, g_tasks: Tensor | None, gamma: float) -> Tensor:
    """M / ||M||_F + gamma * mean_k G_k / ||G_k||_F (tasks with a zero gradient are left out)."""
    if g_tasks is None:
        raise ValueError("direction preservation needs the per-task gradients (task_grads)")
    out = m / m.norm().clamp(min=1e-30)
    norms = g_tasks.reshape(g_tasks.shape[0], -1).norm(dim=1)
    keep = norms > 0
    if bool(keep.any()):
        unit = g_tasks[keep] / norms[keep].view(-1, *([1] * (g_tasks.ndim - 1)))
        out = out + gamma * unit.sum(0) / g_tasks.shape[0]
    return out


class _Diagnostics:
    """Accumulates APT/AdaTask diagnostics over the shared tensors of one step."""

    def __init__(self) -> None:
        self.instant_sq = 0.0  # sum ||(1 - beta_t) d_t||^2
        self.momentum_sq = 0.0  # sum ||m_t||^2
        self.betas: list[float] = []
        self.dot = 0.0
        self.grad_sq = 0.0
        self.update_sq = 0.0
        self.rau: dict[str, list[float]] = {}
        self._pending: list[Tensor] = []

    def add_momentum(self, instant: Tensor, m: Tensor, beta: float) -> None:
        self._pending.append(torch.stack([instant.float().pow(2).sum(), m.float().pow(2).sum()]))
        self.betas.append(beta)

    def add_update(self, grad: Tensor, update: Tensor) -> None:
        g, u = grad.float(), update.float()
        self._pending.append(torch.stack([(g * u).sum(), g.pow(2).sum(), u.pow(2).sum()]))

    def add_task_updates(self, name: str, state: dict, updates: list[Tensor]) -> None:
        au = torch.stack([x.float().pow(2).mean() for x in updates]).tolist()
        prev = state.get("au")  # a list of floats: checkpoints keep it exact (no dtype cast)
        state["au"] = au if prev is None else [AU_DECAY * a + (1 - AU_DECAY) * b for a, b in zip(prev, au, strict=True)]
        total = sum(state["au"])
        self.rau[name] = [x / total if total > 0 else 0.0 for x in state["au"]]

    def result(self) -> dict[str, float]:
        for t in self._pending:
            v = t.tolist()
            if len(v) == 2:
                self.instant_sq += v[0]
                self.momentum_sq += v[1]
            else:
                self.dot += v[0]
                self.grad_sq += v[1]
                self.update_sq += v[2]
        out: dict[str, float] = {}
        if self.momentum_sq > 0:
            out["apt/instant_share"] = (self.instant_sq / self.momentum_sq) ** 0.5
        if self.betas:
            out["apt/beta_mean"] = sum(self.betas) / len(self.betas)
            out["apt/beta_min"] = min(self.betas)
        if self.grad_sq > 0 and self.update_sq > 0:
            out["apt/cos_grad_update"] = self.dot / (self.grad_sq * self.update_sq) ** 0.5
        for name, shares in self.rau.items():
            for k, v in enumerate(shares):
                out[f"adatask/rau/{name}/task{k}"] = v
        return out
