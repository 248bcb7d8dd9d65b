"""MultiTaskOptimizer: the one entry point a trainer calls each step with the per-task losses.

    opt = MultiTaskOptimizer(MTLConfig.from_dict(cfg["mtl"]), ParamRoles.from_model(model), K)
    task_logits, embedded, rep = model.forward_per_task(batch)
    losses = [bce(z, y) for z, y in zip(task_logits, labels.T)]   # K scalars, graph attached
    stats = opt.step(losses, embedded=embedded, representation=rep)

``losses`` is a list of K scalar losses or a [K] tensor. Give the list when each loss is its own
graph root (each task's loss computed from its own tower output): a per-task backward pass then only
runs through that task's tower and gate. From a [K] tensor (``stack``, or one loss over the
concatenated logits) every pass also pushes zeros through the other K - 1 towers (measured: 11.0 vs
18.5 ms per pass for MMoE in bench/mtl_step.py).

``step`` does the backward pass(es), writes the combined gradients, steps the optimizer and clears
the gradients. Which backward it runs (cheapest first):

* one backward of sum_k w_k L_k when neither the method (loss weightings), the optimizer (not
  AdaTask, no direction preservation) nor a diagnostic step needs per-task gradients;
* ``grad_mode='exact'``, scope ``dense``: per-task gradients of the dense shared parameters (K
  passes, or one batched backward); shared parameters get sum_k coef_k g_k, towers sum_k w_k g_k,
  and the tables one summed sparse gradient through ``embedded``: K dense copies of a table are
  never built;
* scope ``all``: K backward passes, tables included (:mod:`apt.scope_all`);
* ``grad_mode='rep'``: per-task gradients w.r.t. the shared representation only, then one
  two-root backward (:mod:`apt.rep_mode`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aptrank.apt.config import MTLConfig
from aptrank.apt.gradients import (
    combine,
    flat_rows,
    gram,
    per_task_grads,
    reduce_grads,
    reduce_stacked,
    unflatten,
)
from aptrank.apt.guards import NonFiniteError, check_grads, check_gram, check_losses, loss_roots
from aptrank.apt.methods import AGGREGATORS, METHODS
from aptrank.apt.methods.base import Combination
from aptrank.apt.optim import build_optimizer
from aptrank.apt.rep_mode import rep_step
from aptrank.apt.roles import ParamRoles, _unique
from aptrank.apt.scope_all import exact_all
from aptrank.apt.step_stats import clip_gradients, step_metrics

Callback = Callable[[int, dict[str, float]], None]
Reducer = Callable[[Tensor], Tensor]


class MultiTaskOptimizer:
    """See the module docstring. ``callback(step, metrics)`` receives diagnostics every
    ``config.diagnostics_every`` steps; ``grad_reducer`` (e.g. an all-reduce mean) is applied to the
    per-task gradient matrix (``rep`` mode: to its Gram matrix) and to the summed dense gradients of
    the other parameters, so every data-parallel rank applies the same update."""

    def __init__(
        self,
        config: MTLConfig | Mapping[str, Any],
        roles: ParamRoles | Mapping[str, Any],
        num_tasks: int,
        *,
        callback: Callback | None = None,
        grad_reducer: Reducer | None = None,
        task_names: Sequence[str] | None = None,
    ) -> None:
        self.config = config if isinstance(config, MTLConfig) else MTLConfig.from_dict(config)
        self.roles = roles if isinstance(roles, ParamRoles) else ParamRoles.from_dict(roles)
        self.roles.validate(num_tasks)
        self.num_tasks = num_tasks
        self.callback = callback
        self.grad_reducer = grad_reducer
        self.task_names = list(task_names) if task_names is not None else [f"task{k}" for k in range(num_tasks)]
        if len(self.task_names) != num_tasks:
            raise ValueError(f"{len(self.task_names)} task names for {num_tasks} tasks")
        cfg = self.config
        if num_tasks == 1 and cfg.method in AGGREGATORS and cfg.method != "ew":
            raise ValueError(
                f"num_tasks=1 with method {cfg.method!r}: an aggregator combines K >= 2 task gradients; "
                "use method 'ew' for a single task"
            )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.method = METHODS[cfg.method](num_tasks, generator=self.generator, **dict(cfg.method_kwargs))
        self.optimizer = build_optimizer(cfg, self.roles, num_tasks, self.method.parameters())
        self.shared = _unique([p for p in self.roles.shared if p.requires_grad])
        self.embeddings = _unique([p for p in self.roles.embeddings if p.requires_grad])
        self.towers = [p for p in self.roles.task_params() if p.requires_grad]
        self._backend = "loop" if cfg.grad_scope == "all" else cfg.per_task_backend
        self.needs_task_grads = cfg.uses_adatask or cfg.apt.direction_preservation
        self.step_count = 0
        self.skipped_steps = 0
        self.skipped_in_a_row = 0

    def backend(self, device: torch.device) -> str:
        """The per-task backward in use: ``auto`` is K passes (``loop``) on the CPU, where the vmap'd
        batched backward measured slower (bench/mtl_step.py), and ``batched`` on accelerators,
        where one batched backward saves K-1 rounds of kernel launches (not measured here)."""
        if self._backend != "auto":
            return self._backend
        return "loop" if device.type == "cpu" else "batched"

    # ---- the step ------------------------------------------------------------------------------
    def step(
        self,
        losses: Tensor | Sequence[Tensor],
        *,
        embedded: Tensor | None = None,
        representation: Tensor | None = None,
    ) -> dict[str, float]:
        """Backward(s), combined gradients, optimizer step, gradients cleared; returns metrics.
        ``losses``: K scalar tensors (separate graph roots, see the module docstring) or a [K] tensor."""
        losses, roots = loss_roots(losses, self.num_tasks)
        every = self.config.diagnostics_every
        diagnose = every > 0 and self.step_count % every == 0
        self.zero_grad()
        loss_values = losses.detach().double().cpu()
        saved = (self.method.state_dict(), self.generator.get_state())  # restored if the step is dropped
        try:
            check_losses(loss_values, self.task_names)
            comb, gram_matrix, task_grads = self._backward(
                losses, roots, loss_values, embedded, representation, diagnose
            )
            check_grads(self.parameters(), self.roles.name)
        except NonFiniteError as e:
            self.method.load_state_dict(saved[0])
            self.generator.set_state(saved[1])
            return self._skip(e)
        self.skipped_in_a_row = 0
        mix = comb.task_mix() if task_grads is not None else None
        if comb.max_norm is not None:
            extra = self.embeddings if self.config.grad_scope == "all" else []
            factor = clip_gradients([p.grad for p in [*self.shared, *extra] if p.grad is not None], comb.max_norm)
            if mix is not None:
                mix = mix * factor
        metrics = step_metrics(self.task_names, loss_values, comb, gram_matrix if diagnose else None)
        if task_grads is not None and mix is not None:
            device = self.shared[0].device if self.shared else losses.device
            mix = mix.to(device=device, dtype=torch.float32)
        metrics.update(
            self.optimizer.step(
                task_grads=task_grads if self.needs_task_grads else None, task_mix=mix, diagnostics=diagnose
            )
        )
        self.zero_grad()
        if diagnose and self.callback is not None:
            self.callback(self.step_count, metrics)
        self.step_count += 1
        return metrics

    def _backward(
        self,
        losses: Tensor,
        roots: Sequence[Tensor],
        loss_values: Tensor,
        embedded: Tensor | None,
        representation: Tensor | None,
        diagnose: bool,
    ) -> tuple[Combination, Tensor | None, dict[Tensor, Tensor] | None]:
        """The backward pass(es) of one step: writes ``.grad``; returns (combination, Gram, per-task grads)."""
        cfg = self.config
        per_task = self.method.needs_gram() or self.needs_task_grads or diagnose
        task_grads: dict[Tensor, Tensor] | None = None
        gram_matrix: Tensor | None = None
        if not per_task:
            comb = self.method.combine(None, loss_values)
            if not torch.equal(comb.coef, comb.tower_weights):
                raise RuntimeError(f"method {self.method.name} needs the Gram matrix at this step")
            (losses * comb.tower_weights.to(losses)).sum().backward()
            if self.grad_reducer is not None:
                reduce_grads(self.shared + self.towers, self.grad_reducer)
        elif cfg.grad_mode == "rep":
            if representation is None:
                raise ValueError("grad_mode 'rep' needs step(..., representation=...)")
            comb, gram_matrix = rep_step(
                losses,
                roots,
                representation,
                self.backend(losses.device),
                lambda g: self._choose(g, loss_values),
                self.grad_reducer,
            )
            if self.grad_reducer is not None:
                reduce_grads(self.shared + self.towers, self.grad_reducer)
        else:
            comb, gram_matrix, task_grads = self._exact_step(losses, roots, loss_values, embedded)
        return comb, gram_matrix, task_grads

    def _exact_step(
        self, losses: Tensor, roots: Sequence[Tensor], loss_values: Tensor, embedded: Tensor | None
    ) -> tuple[Combination, Tensor, dict[Tensor, Tensor]]:
        if self.config.grad_scope == "all":
            return exact_all(
                self.shared,
                self.embeddings,
                self.towers,
                roots,
                lambda g: self._choose(g, loss_values),
                self.grad_reducer,
            )
        tables = bool(self.embeddings) or self.roles.external_embeddings
        route = embedded is not None and embedded.requires_grad and tables
        backend = self.backend(losses.device)
        if backend == "loop":
            return self._exact_loop(losses, roots, loss_values, embedded if route else None, tables)
        inputs = [*self.shared, *self.towers, *([embedded] if route else [])]
        # without ``embedded`` the tables need one more backward through the dense part: keep the graph
        grads = per_task_grads(losses, inputs, backend, retain_graph=tables and not route, roots=roots)
        ns, nt = len(self.shared), len(self.towers)
        g_shared, g_towers = grads[:ns], grads[ns : ns + nt]
        if self.grad_reducer is not None:
            g_shared = reduce_stacked(g_shared, self.grad_reducer)
        gram_matrix = gram(g_shared)
        comb = self._choose(gram_matrix, loss_values)
        for p, g in zip(self.shared, g_shared, strict=True):
            p.grad = combine(comb.coef, g)
        for p, g in zip(self.towers, g_towers, strict=True):
            p.grad = combine(comb.tower_weights, g)
        if self.grad_reducer is not None:
            reduce_grads(self.towers, self.grad_reducer)
        if route:
            torch.autograd.backward(embedded, combine(comb.tower_weights, grads[-1]), inputs=self.embeddings or None)
        elif self.embeddings:
            torch.autograd.backward(losses, comb.tower_weights.to(losses), inputs=self.embeddings)
        elif tables:
            raise ValueError("external (fused) embedding tables need step(..., embedded=...) to receive a gradient")
        return comb, gram_matrix, dict(zip(self.shared, g_shared, strict=True))

    def _exact_loop(
        self, losses: Tensor, roots: Sequence[Tensor], loss_values: Tensor, embedded: Tensor | None, tables: bool
    ) -> tuple[Combination, Tensor, dict[Tensor, Tensor]]:
        """Per-task backward passes from each task's own loss root, asking for the shared parameters
        only (no towers, no embedding-input gradient); towers and tables get their weighted-sum
        gradient from one more pass:

        * tower weights 1 (every aggregator but Nash-MTL): K - 1 task passes, then one pass of
          sum_k L_k that gives the shared parameters' sum (so g_K = sum - g_1 - ... - g_{K-1}, equal
          up to rounding) and the towers' and tables' (or ``embedded``'s) gradients at once;
        * otherwise (Nash-MTL's alpha, loss weightings on the per-task path): K task passes, then,
          once the method has chosen w, one pass of sum_k w_k L_k for the towers and tables only.
          (Scaling the towers by w_k and asking the task passes for d L_k / d embedded instead
          measured slower: 1.69x vs 1.63x EW for Nash-MTL, bench/mtl_step.py.)

        The per-task gradients are kept as one [K, n] matrix: one Gram product, one combination.
        """
        k, shared = self.num_tasks, self.shared
        if tables and embedded is None and not self.embeddings:
            raise ValueError("external (fused) embedding tables need step(..., embedded=...) to receive a gradient")
        unit = self.method.unit_tower_weights
        rest = [*self.towers, *([embedded] if embedded is not None else self.embeddings)]
        passes = [
            torch.autograd.grad(roots[t], shared, retain_graph=True, allow_unused=True)
            for t in range(k - 1 if unit else k)
        ]
        total = torch.autograd.grad(losses.sum(), [*shared, *rest], allow_unused=True) if unit else None
        ns, nt = len(shared), len(self.towers)
        g_flat = flat_rows(passes, shared, total[:ns] if total is not None else None)  # [K, n]
        if self.grad_reducer is not None:
            g_flat = self.grad_reducer(g_flat)
        gram_matrix = gram([g_flat])
        comb = self._choose(gram_matrix, loss_values)
        w = comb.tower_weights
        rest_grads: Sequence[Tensor | None] = ()
        if unit:
            if not bool((w == 1).all()):
                raise RuntimeError(f"method {self.method.name} declares unit tower weights but returned others")
            rest_grads = total[ns:]
        elif rest:
            rest_grads = torch.autograd.grad(losses, rest, grad_outputs=w.to(losses), allow_unused=True)
        for p, g in zip(shared, unflatten(combine(comb.coef, g_flat), shared), strict=True):
            p.grad = g
        for p, g in zip(self.towers, rest_grads[:nt], strict=True):
            p.grad = g if g is not None else torch.zeros_like(p)
        if self.grad_reducer is not None:
            reduce_grads(self.towers, self.grad_reducer)
        if embedded is not None:
            if rest_grads[-1] is not None:
                torch.autograd.backward(embedded, rest_grads[-1], inputs=self.embeddings or None)
        else:
            for p, g in zip(self.embeddings, rest_grads[nt:], strict=True):
                p.grad = g
        return comb, gram_matrix, dict(zip(shared, unflatten(g_flat, shared), strict=True))

    def _choose(self, gram_matrix: Tensor, loss_values: Tensor) -> Combination:
        """The method's combination, once the Gram matrix is known to be finite."""
        return self.method.combine(check_gram(gram_matrix, self.task_names), loss_values)

    def _skip(self, error: NonFiniteError) -> dict[str, float]:
        """Drop this step (nothing was applied): raise under ``nonfinite: raise``, else count it and
        raise after ``max_skipped_in_a_row`` skipped steps in a row."""
        self.zero_grad()
        if self.config.nonfinite == "raise":
            raise error
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= self.config.max_skipped_in_a_row:
            raise NonFiniteError(f"{self.skipped_in_a_row} steps in a row skipped (mtl.max_skipped_in_a_row): {error}")
        return {"skipped": 1.0}

    # ---- housekeeping --------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def end_epoch(self, mean_task_losses: Sequence[float]) -> None:
        """Tell epoch-level methods (DWA, GradNorm) the epoch's mean training loss per task."""
        if len(mean_task_losses) != self.num_tasks:
            raise ValueError(f"{len(mean_task_losses)} mean losses for {self.num_tasks} tasks")
        self.method.end_epoch(mean_task_losses)

    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def forget(self, params: Sequence[nn.Parameter]) -> None:
        """Drop the optimizer state (moments, step counts) of ``params``: their next update starts
        as a first one, for parameters re-initialised in place (MEDA's fresh embedding tables)."""
        for p in params:
            self.optimizer.state.pop(p, None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_count = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
