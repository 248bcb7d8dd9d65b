"""apt: task-aware optimization for multi-task models (any PyTorch model; imports torch and scipy only).

Per-task gradients (exact, batched or looped, or w.r.t. the shared representation), gradient
aggregators and loss weightings (``METHODS``), optimizers AdamW / AdaTask / Muon with APT
(``OPTIMIZERS``), diagnostics through a callback, and one entry point, :class:`MultiTaskOptimizer`.
See apt/README.md.
"""

from aptrank.apt.config import APTConfig, ConfigError, MTLConfig, MuonConfig
from aptrank.apt.engine import MultiTaskOptimizer
from aptrank.apt.guards import NonFiniteError
from aptrank.apt.methods import AGGREGATORS, METHODS, WEIGHTINGS, Combination, Method
from aptrank.apt.optim import OPTIMIZERS, AdamW, AdaTask, AdaTaskMuon, Muon, TaskAwareOptimizer
from aptrank.apt.roles import ParamRoles

__all__ = [
    "AGGREGATORS",
    "METHODS",
    "OPTIMIZERS",
    "WEIGHTINGS",
    "APTConfig",
    "AdaTask",
    "AdaTaskMuon",
    "AdamW",
    "Combination",
    "ConfigError",
    "MTLConfig",
    "Method",
    "MultiTaskOptimizer",
    "Muon",
    "MuonConfig",
    "NonFiniteError",
    "ParamRoles",
    "TaskAwareOptimizer",
]
