"""What every MTL method is: a rule that turns the task losses (and, for gradient methods, the K×K Gram
matrix G Gᵀ of the per-task gradients) into a ``Combination``.

Every aggregator reads G only through its Gram matrix, so the decision is made in K×K space (float64,
CPU); G itself is touched once, by the caller, to form the shared gradient ``coef @ G`` and, for
AdaTask, the per-task components ``task_mix() @ G``. Scale convention (ALGORITHMS.md): the shared
gradient written is K·d for a direction d on the mean scale, so EW equals the plain summed loss;
a method that differs (Nash-MTL) says so.

Hyperparameters: each method lists them in ``KWARGS`` as ``name -> (default, check)`` where
``check(value)`` returns None when the value is valid, else the rule it breaks (a string).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aptrank.apt.config import ConfigError

Check = Callable[[Any], str | None]


def ones(k: int) -> Tensor:
    """K ones (float64): the default tower weights."""
    return torch.ones(k, dtype=torch.float64)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def finite(v: Any) -> str | None:
    return None if _is_number(v) and abs(v) < float("inf") else f"must be a finite number, got {v!r}"


def nonneg(v: Any) -> str | None:
    return None if _is_number(v) and v >= 0 else f"must be a number >= 0, got {v!r}"


def positive(v: Any) -> str | None:
    return None if _is_number(v) and v > 0 else f"must be a number > 0, got {v!r}"


def unit(v: Any) -> str | None:
    return None if _is_number(v) and 0 <= v < 1 else f"must be a number in [0, 1), got {v!r}"


def pos_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
    return None if ok else f"must be an integer >= 1, got {v!r}"


def one_of(*options: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {list(options)}, got {v!r}"

    return check


def clip_factor(norm: float, max_norm: float) -> float:
    """Factor that scales a gradient of global norm ``norm`` to at most ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_``: max_norm / (norm + 1e-6), capped at 1)."""
    return min(1.0, max_norm / (norm + 1e-6))


@dataclass(frozen=True)
class Combination:
    """One step's decision.

    * ``coef`` [K]: the shared gradient written is sum_k coef_k g_k.
    * ``tower_weights`` [K]: every parameter outside the MTL treatment (towers; tables under scope
      ``dense``) gets the gradient of sum_k w_k L_k.
    * ``mix`` [K, K] (optional): row i is task i's contribution as a combination of the task
      gradients (PCGrad); None means diag(coef). ``coef`` equals ``mix.sum(0)``.
    * ``max_norm``: clip the written shared gradient to this global norm (Nash-MTL); None: no clip.
    * ``info``: method-specific values for logs (weights, orders, cosines).
    """

    coef: Tensor
    tower_weights: Tensor
    mix: Tensor | None = None
    max_norm: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def task_mix(self) -> Tensor:
        """[K, K]: task k's contribution to the written gradient is (task_mix() @ G)_k."""
        return self.mix if self.mix is not None else torch.diag(self.coef)


class Method(ABC):
    """Base of every aggregator and loss weighting (``apt.METHODS`` maps the name to the class)."""

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    KWARGS: ClassVar[dict[str, tuple[Any, Check]]] = {}
    #: the towers always get the plain sum of the task losses' gradients (tower weights 1); lets the
    #: engine take the summed-loss pass for towers and tables (see MultiTaskOptimizer._exact_summed)
    unit_tower_weights: ClassVar[bool] = False

    def __init__(self, num_tasks: int, generator: torch.Generator | None = None, **kwargs: Any) -> None:
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"{type(self).__name__}: num_tasks must be an integer >= 1, got {num_tasks!r}")
        self.validate_kwargs(kwargs, "mtl.method_kwargs")
        self.num_tasks = num_tasks
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        for key, (default, _check) in self.KWARGS.items():
            setattr(self, key, kwargs.get(key, default))

    @classmethod
    def validate_kwargs(cls, kwargs: Mapping[str, Any], key: str) -> None:
        """Raise ``ConfigError`` naming ``key.<name>`` for an unknown or invalid hyperparameter."""
        for name, value in kwargs.items():
            if name not in cls.KWARGS:
                raise ConfigError(
                    f"{key}.{name}", f"unknown argument of method {cls.name!r}; allowed: {sorted(cls.KWARGS)}"
                )
            problem = cls.KWARGS[name][1](value)
            if problem is not None:
                raise ConfigError(f"{key}.{name}", f"{problem} (method {cls.name!r})")

    def needs_gram(self) -> bool:
        """Whether this step's ``combine`` reads the Gram matrix (so per-task gradients are needed)."""
        return True

    @abstractmethod
    def combine(self, gram: Tensor | None, losses: Tensor) -> Combination:
        """This step's combination from ``gram`` [K, K] float64 (None when ``needs_gram()`` is False)
        and the detached task losses [K] float64. Methods with learned parameters also leave their
        gradient in ``.grad`` of ``parameters()``."""

    def parameters(self) -> list[nn.Parameter]:
        """Learned parameters of the method itself (UW's log-variances, GradNorm's weights)."""
        return []

    def end_epoch(self, mean_task_losses: Sequence[float]) -> None:  # noqa: B027 (optional hook)
        """Record the epoch-mean task losses (DWA, GradNorm)."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": [p.detach().clone() for p in self.parameters()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"state of method {state.get('name')!r} cannot be loaded into {self.name!r}")
        with torch.no_grad():
            for p, saved in zip(self.parameters(), state.get("params", []), strict=False):
                p.copy_(saved)

    def apply(self, grads: Tensor, losses: Tensor | None = None) -> Tensor:
        """The shared gradient the engine would write for a gradient matrix ``grads`` [K, n]:
        sum_k coef_k g_k, clipped to ``max_norm``. For tests, toy problems and standalone use."""
        g64 = grads.detach().double().cpu()
        if losses is None:
            losses = torch.ones(g64.shape[0], dtype=torch.float64)
        gram = g64 @ g64.T if self.needs_gram() else None
        comb = self.combine(gram, losses.detach().double().cpu())
        out = comb.coef.to(g64) @ g64
        if comb.max_norm is not None:
            out = out * clip_factor(float(out.norm()), comb.max_norm)
        return out.to(dtype=grads.dtype, device=grads.device)


class Weighting(Method):
    """A loss weighting: w_k from the losses only; shared gradient sum_k w_k g_k, one backward."""

    @abstractmethod
    def weights(self, losses: Tensor) -> Tensor:
        """This step's loss weights [K] float64."""

    def needs_gram(self) -> bool:
        return False

    def combine(self, gram: Tensor | None, losses: Tensor) -> Combination:
        w = self.weights(losses)
        return Combination(coef=w, tower_weights=w, info={"weights": w.tolist()})
