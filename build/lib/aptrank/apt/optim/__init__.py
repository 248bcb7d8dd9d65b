"""Optimizers by name (``OPTIMIZERS``): adamw, adatask, muon, adatask_muon; APT is a switch on each."""

from aptrank.apt.optim.core import TaskAwareOptimizer
from aptrank.apt.optim.newton_schulz import zeropower_via_newtonschulz
from aptrank.apt.optim.optimizers import OPTIMIZERS, AdamW, AdaTask, AdaTaskMuon, Muon, build_optimizer

__all__ = [
    "OPTIMIZERS",
    "AdaTask",
    "AdaTaskMuon",
    "AdamW",
    "Muon",
    "TaskAwareOptimizer",
    "build_optimizer",
    "zeropower_via_newtonschulz",
]
