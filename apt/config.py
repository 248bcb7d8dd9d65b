"""MTLConfig: the ``mtl`` section of a job config, a typed model validated when it loads.

Types are checked by pydantic (:mod:`aptrank.config_model`); the rules and combinations below raise
:class:`ConfigError` naming the key and the reason, so a bad job is refused before any data is read
(e.g. direction preservation without Muon, an unknown method, a negative CAGrad alpha, AdaTask with
representation gradients). Depends on pydantic and :mod:`aptrank.errors` only, not on the pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from aptrank.config_model import ConfigModel
from aptrank.errors import ConfigError

GRAD_MODES = ("exact", "rep")
GRAD_SCOPES = ("dense", "all")
PER_TASK_BACKENDS = ("auto", "batched", "loop")
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

__all__ = ["ADJUST_LR_FNS", "APTConfig", "ConfigError", "MTLConfig", "MuonConfig"]


def _pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError("", f"must be a pair [beta1, beta2], got {value!r}")
    return tuple(value)


class APTConfig(ConfigModel):
    """APT on top of the base optimizer (ALGORITHMS.md, "Optimizers / APT"; our formulation).

    ``momentum``: adaptive, cosine-based momentum beta_t in [beta_min, beta_max] for shared tensors.
    ``beta_max`` None means the base optimizer's momentum (Adam's beta1, Muon's momentum).
    ``direction_preservation``: Muon only; M' = M/||M||_F + gamma * mean_k G_k/||G_k||_F before
    Newton-Schulz.
    """

    momentum: bool = False
    beta_min: float = 0.5
    beta_max: float | None = None
    direction_preservation: bool = False
    gamma: float = 0.1

    @model_validator(mode="after")
    def _rules(self) -> APTConfig:
        _unit("beta_min", self.beta_min)
        if self.beta_max is not None:
            _unit("beta_max", self.beta_max)
        _nonneg("gamma", self.gamma)
        return self


class MuonConfig(ConfigModel):
    """Muon's hyper-parameters (its 2-D hidden weights; Jordan et al. 2024, "Muon: An optimizer for
    hidden layers"); ``weight_decay`` None means ``mtl.weight_decay``."""

    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    weight_decay: float | None = None
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = None

    @model_validator(mode="after")
    def _rules(self) -> MuonConfig:
        _positive("lr", self.lr)
        _unit("momentum", self.momentum)
        if not 1 <= self.ns_steps < 100:
            raise ConfigError("ns_steps", f"must be an integer in [1, 99], got {self.ns_steps!r}")
        if self.weight_decay is not None:
            _nonneg("weight_decay", self.weight_decay)
        return self


class MTLConfig(ConfigModel):
    """How the multi-task optimizer combines task gradients and steps (see apt/README.md).

    ``method`` names an entry of ``apt.METHODS`` (``method_kwargs`` are its arguments); ``optimizer``
    one of ``apt.OPTIMIZERS``. ``lr``/``betas``/``eps``/``weight_decay`` are the Adam(W)/AdaTask
    settings (and Muon's auxiliary AdamW); ``embedding_lr`` (None: ``lr``) and
    ``embedding_weight_decay`` are the row-wise sparse Adam's for embedding tables;
    ``embedding_optimizer`` picks the table update: ``adam`` (row-wise lazy AdamW) or
    ``rowwise_adagrad`` (what TorchRec's fused CPU kernels run when tables are sharded).
    ``grad_mode``: ``exact`` per-task gradients of the shared parameters or ``rep`` gradients
    w.r.t. the shared representation (LibMTL's rep_grad). ``grad_scope``: ``dense`` (embedding tables
    get the summed-loss gradient as sparse rows) or ``all`` (tables get the MTL treatment too).
    ``per_task_backend``: how exact per-task gradients are taken: one batched backward
    (``batched``, vmap over K cotangents), K backward passes (``loop``) or ``auto`` (loop on the CPU,
    where it measured faster, batched on accelerators; always loop for ``grad_scope: all``, whose
    sparse table gradients vmap cannot batch).
    ``diagnostics_every``: N > 0 computes diagnostics every N steps (0: never).
    ``nonfinite``: a NaN/Inf loss or gradient ``raise``s (default) or the step is skipped (``skip``,
    nothing changes) and counted; ``max_skipped_in_a_row`` skipped steps in a row raise.
    """

    method: str = "ew"
    method_kwargs: dict[str, Any] = Field(default_factory=dict)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: Annotated[tuple[float, float], BeforeValidator(_pair)] = (0.9, 0.999)
    eps: float = 1e-8
    embedding_lr: float | None = None
    embedding_weight_decay: float = 0.0
    embedding_optimizer: Literal["adam", "rowwise_adagrad"] = "adam"
    muon: MuonConfig = Field(default_factory=MuonConfig)
    grad_mode: Literal["exact", "rep"] = "exact"
    grad_scope: Literal["dense", "all"] = "dense"
    per_task_backend: Literal["auto", "batched", "loop"] = "auto"
    apt: APTConfig = Field(default_factory=APTConfig)
    diagnostics_every: int = 0
    seed: int = 0
    nonfinite: Literal["raise", "skip"] = "raise"
    max_skipped_in_a_row: int = 10

    # ---- derived -------------------------------------------------------------------------------
    @property
    def uses_muon(self) -> bool:
        return self.optimizer in ("muon", "adatask_muon")

    @property
    def uses_adatask(self) -> bool:
        return self.optimizer in ("adatask", "adatask_muon")

    def apt_beta_max_for(self, kind: str) -> float:
        """The resolved beta_max for a shared tensor updated by ``kind`` ('adam' or 'muon'): the
        configured one, else that tensor's base momentum (Muon's momentum, or Adam's beta1, also for
        the per-task Adam moments of ``adatask_muon``)."""
        if self.apt.beta_max is not None:
            return self.apt.beta_max
        if kind == "muon" and self.optimizer == "muon":
            return self.muon.momentum
        return self.betas[0]

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | MTLConfig | None) -> MTLConfig:
        """Build and validate from the ``mtl`` section (or a whole config holding an ``mtl`` key).

        Raises :class:`ConfigError` naming the offending key (``mtl.apt.beta_min``...) and why.
        """
        if isinstance(d, MTLConfig):
            return d
        if isinstance(d, Mapping) and isinstance(d.get("mtl"), Mapping):
            d = d["mtl"]
        return cls.parse(d, prefix="mtl")

    @model_validator(mode="after")
    def _rules(self) -> MTLConfig:
        """Refuse the first invalid value or combination (keys relative to the ``mtl`` section)."""
        from aptrank.apt.methods import METHODS
        from aptrank.apt.optim import OPTIMIZERS

        if self.method not in METHODS:
            raise ConfigError("method", f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        METHODS[self.method].validate_kwargs(self.method_kwargs, "method_kwargs")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        _positive("lr", self.lr)
        _nonneg("weight_decay", self.weight_decay)
        for i, b in enumerate(self.betas):
            _unit("betas", b, f"beta{i + 1}")
        _positive("eps", self.eps)
        if self.embedding_lr is not None:
            _positive("embedding_lr", self.embedding_lr)
        _nonneg("embedding_weight_decay", self.embedding_weight_decay)
        if self.diagnostics_every < 0:
            raise ConfigError("diagnostics_every", f"must be an integer >= 0, got {self.diagnostics_every!r}")
        if self.max_skipped_in_a_row < 1:
            raise ConfigError("max_skipped_in_a_row", f"must be an integer >= 1, got {self.max_skipped_in_a_row!r}")
        a = self.apt
        for kind in ("adam", "muon"):
            hi = self.apt_beta_max_for(kind)
            if a.momentum and a.beta_min > hi:
                raise ConfigError("apt.beta_min", f"must be <= beta_max ({hi} for {kind} tensors), got {a.beta_min}")

        # ---- combinations --------------------------------------------------------------------
        if a.direction_preservation and not self.uses_muon:
            raise ConfigError(
                "apt.direction_preservation",
                f"needs Muon's orthogonalisation (optimizer 'muon' or 'adatask_muon'), not {self.optimizer!r}",
            )
        if self.grad_mode == "rep":
            if self.uses_adatask:
                raise ConfigError(
                    "optimizer",
                    "AdaTask keeps per-task moments of the shared parameters' gradients; grad_mode 'rep' "
                    "only gives per-task gradients w.r.t. the representation (use grad_mode 'exact')",
                )
            if a.direction_preservation:
                raise ConfigError(
                    "apt.direction_preservation",
                    "needs per-task gradients of each shared weight; grad_mode 'rep' does not give them",
                )
            if self.grad_scope != "dense":
                raise ConfigError(
                    "grad_scope", "grad_mode 'rep' treats no parameter per task; grad_scope must be 'dense'"
                )
        if self.grad_scope == "all" and self.per_task_backend == "batched":
            raise ConfigError(
                "per_task_backend",
                "grad_scope 'all' needs per-task sparse table gradients, which the batched (vmap) "
                "backward cannot produce; use 'loop' or 'auto'",
            )
        return self


def _positive(key: str, v: float) -> None:
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(key, f"must be > 0 and finite, got {v!r}")


def _nonneg(key: str, v: float) -> None:
    if not (v >= 0 and math.isfinite(v)):
        raise ConfigError(key, f"must be >= 0 and finite, got {v!r}")


def _unit(key: str, v: float, what: str = "value") -> None:
    if not 0 <= v < 1:
        raise ConfigError(key, f"{what} must be in [0, 1), got {v!r}")
