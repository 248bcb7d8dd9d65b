"""MTLConfig: the ``mtl`` section of a job config, validated when it loads.

Every invalid value or combination raises :class:`ConfigError` naming the key and the reason, so a
bad job is refused before any data is read (e.g. direction preservation without Muon, an unknown
method, a negative CAGrad alpha, AdaTask with representation gradients).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

GRAD_MODES = ("exact", "rep")
GRAD_SCOPES = ("dense", "all")
PER_TASK_BACKENDS = ("auto", "batched", "loop")
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class ConfigError(ValueError):
    """An ``mtl`` config value or combination is invalid; ``key`` is its dotted path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class APTConfig:
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


@dataclass(frozen=True)
class MuonConfig:
    """Muon's hyper-parameters (its 2-D hidden weights); ``weight_decay`` None means ``mtl.weight_decay``."""

    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    weight_decay: float | None = None
    adjust_lr_fn: str | None = None


@dataclass(frozen=True)
class MTLConfig:
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
    method_kwargs: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    embedding_lr: float | None = None
    embedding_weight_decay: float = 0.0
    embedding_optimizer: str = "adam"
    muon: MuonConfig = field(default_factory=MuonConfig)
    grad_mode: str = "exact"
    grad_scope: str = "dense"
    per_task_backend: str = "auto"
    apt: APTConfig = field(default_factory=APTConfig)
    diagnostics_every: int = 0
    seed: int = 0
    nonfinite: str = "raise"
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["method_kwargs"] = dict(self.method_kwargs)
        d["betas"] = list(self.betas)
        return d

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> MTLConfig:
        """Build and validate from the ``mtl`` section (or a whole config holding an ``mtl`` key).

        Raises :class:`ConfigError` naming the offending key (``mtl.apt.beta_min``...) and why.
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError("mtl", f"must be a mapping, got {type(d).__name__}")
        if "mtl" in d and isinstance(d["mtl"], Mapping):
            d = d["mtl"]
        _no_unknown("mtl", d, {f.name for f in fields(cls)})
        kw: dict[str, Any] = dict(d)
        kw["muon"] = _sub(MuonConfig, "mtl.muon", d.get("muon"))
        kw["apt"] = _sub(APTConfig, "mtl.apt", d.get("apt"))
        if "betas" in kw:
            betas = kw["betas"]
            if not isinstance(betas, list | tuple) or len(betas) != 2:
                raise ConfigError("mtl.betas", f"must be a pair [beta1, beta2], got {betas!r}")
            kw["betas"] = (betas[0], betas[1])
        if kw.get("method_kwargs") is None:
            kw["method_kwargs"] = {}
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` on the first invalid value or combination."""
        from aptrank.apt.methods import METHODS
        from aptrank.apt.optim import OPTIMIZERS

        if self.method not in METHODS:
            raise ConfigError("mtl.method", f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if not isinstance(self.method_kwargs, Mapping):
            raise ConfigError("mtl.method_kwargs", "must be a mapping")
        METHODS[self.method].validate_kwargs(dict(self.method_kwargs), "mtl.method_kwargs")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                "mtl.optimizer", f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )
        _positive("mtl.lr", self.lr)
        _nonneg("mtl.weight_decay", self.weight_decay)
        for i, b in enumerate(self.betas):
            _unit("mtl.betas", b, f"beta{i + 1}")
        _positive("mtl.eps", self.eps)
        if self.embedding_lr is not None:
            _positive("mtl.embedding_lr", self.embedding_lr)
        _nonneg("mtl.embedding_weight_decay", self.embedding_weight_decay)
        if self.embedding_optimizer not in ("adam", "rowwise_adagrad"):
            raise ConfigError(
                "mtl.embedding_optimizer",
                f"must be 'adam' (row-wise lazy AdamW) or 'rowwise_adagrad', got {self.embedding_optimizer!r}",
            )
        m = self.muon
        _positive("mtl.muon.lr", m.lr)
        _unit("mtl.muon.momentum", m.momentum)
        _bool("mtl.muon.nesterov", m.nesterov)
        if not isinstance(m.ns_steps, int) or isinstance(m.ns_steps, bool) or not 1 <= m.ns_steps < 100:
            raise ConfigError("mtl.muon.ns_steps", f"must be an integer in [1, 99], got {m.ns_steps!r}")
        if m.weight_decay is not None:
            _nonneg("mtl.muon.weight_decay", m.weight_decay)
        if m.adjust_lr_fn not in ADJUST_LR_FNS:
            raise ConfigError("mtl.muon.adjust_lr_fn", f"must be one of {ADJUST_LR_FNS}, got {m.adjust_lr_fn!r}")
        _choice("mtl.grad_mode", self.grad_mode, GRAD_MODES)
        _choice("mtl.grad_scope", self.grad_scope, GRAD_SCOPES)
        _choice("mtl.per_task_backend", self.per_task_backend, PER_TASK_BACKENDS)
        if (
            not isinstance(self.diagnostics_every, int)
            or isinstance(self.diagnostics_every, bool)
            or (self.diagnostics_every < 0)
        ):
            raise ConfigError("mtl.diagnostics_every", f"must be an integer >= 0, got {self.diagnostics_every!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError("mtl.seed", f"must be an integer, got {self.seed!r}")
        _choice("mtl.nonfinite", self.nonfinite, ("raise", "skip"))
        n = self.max_skipped_in_a_row
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError("mtl.max_skipped_in_a_row", f"must be an integer >= 1, got {n!r}")

        a = self.apt
        _bool("mtl.apt.momentum", a.momentum)
        _bool("mtl.apt.direction_preservation", a.direction_preservation)
        _unit("mtl.apt.beta_min", a.beta_min)
        if a.beta_max is not None:
            _unit("mtl.apt.beta_max", a.beta_max)
        for kind in ("adam", "muon"):
            hi = self.apt_beta_max_for(kind)
            if a.momentum and a.beta_min > hi:
                raise ConfigError(
                    "mtl.apt.beta_min",
                    f"must be <= beta_max ({hi} for {kind} tensors), got {a.beta_min}",
                )
        _nonneg("mtl.apt.gamma", a.gamma)

        # ---- combinations --------------------------------------------------------------------
        if a.direction_preservation and not self.uses_muon:
            raise ConfigError(
                "mtl.apt.direction_preservation",
                f"needs Muon's orthogonalisation (optimizer 'muon' or 'adatask_muon'), not {self.optimizer!r}",
            )
        if self.grad_mode == "rep":
            if self.uses_adatask:
                raise ConfigError(
                    "mtl.optimizer",
                    "AdaTask keeps per-task moments of the shared parameters' gradients; grad_mode 'rep' "
                    "only gives per-task gradients w.r.t. the representation (use grad_mode 'exact')",
                )
            if a.direction_preservation:
                raise ConfigError(
                    "mtl.apt.direction_preservation",
                    "needs per-task gradients of each shared weight; grad_mode 'rep' does not give them",
                )
            if self.grad_scope != "dense":
                raise ConfigError(
                    "mtl.grad_scope", "grad_mode 'rep' treats no parameter per task; grad_scope must be 'dense'"
                )
        if self.grad_scope == "all" and self.per_task_backend == "batched":
            raise ConfigError(
                "mtl.per_task_backend",
                "grad_scope 'all' needs per-task sparse table gradients, which the batched (vmap) "
                "backward cannot produce; use 'loop' or 'auto'",
            )


def _sub(cls: type, key: str, value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
    _no_unknown(key, value, {f.name for f in fields(cls)})
    return cls(**value)


def _no_unknown(key: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key; allowed: {sorted(allowed)}")


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(key, f"must be a number, got {v!r}")
    return float(v)


def _positive(key: str, v: Any) -> None:
    if not _number(key, v) > 0:
        raise ConfigError(key, f"must be > 0, got {v!r}")


def _nonneg(key: str, v: Any) -> None:
    if not _number(key, v) >= 0:
        raise ConfigError(key, f"must be >= 0, got {v!r}")


def _unit(key: str, v: Any, what: str = "value") -> None:
    if not 0 <= _number(key, v) < 1:
        raise ConfigError(key, f"{what} must be in [0, 1), got {v!r}")


def _bool(key: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(key, f"must be true or false, got {v!r}")


def _choice(key: str, v: Any, choices: tuple) -> None:
    if v not in choices:
        raise ConfigError(key, f"must be one of {list(choices)}, got {v!r}")
