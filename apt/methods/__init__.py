"""MTL methods by name: ``METHODS[name](num_tasks, generator=..., **kwargs)``.

Aggregators read the task-gradient Gram matrix: ew, mgda, pcgrad, cagrad, nash_mtl, imgrad,
sdmgrad, aligned_mtl. Loss weightings change w_k: uw, dwa, gradnorm, rlw. See apt/README.md.
"""

from __future__ import annotations

from apt.methods.aligned_mtl import AlignedMTL
from apt.methods.base import Combination, Method, Weighting
from apt.methods.cagrad import CAGrad
from apt.methods.dwa import DWA
from apt.methods.ew import EW
from apt.methods.gradnorm import GradNorm
from apt.methods.imgrad import IMGrad
from apt.methods.mgda import MGDA
from apt.methods.nash_mtl import NashMTL
from apt.methods.pcgrad import PCGrad
from apt.methods.rlw import RLW
from apt.methods.sdmgrad import SDMGrad
from apt.methods.uw import UW

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (EW, MGDA, PCGrad, CAGrad, NashMTL, IMGrad, SDMGrad, AlignedMTL, UW, DWA, GradNorm, RLW)
}

AGGREGATORS = ("ew", "mgda", "pcgrad", "cagrad", "nash_mtl", "imgrad", "sdmgrad", "aligned_mtl")
WEIGHTINGS = ("uw", "dwa", "gradnorm", "rlw")

__all__ = ["AGGREGATORS", "METHODS", "WEIGHTINGS", "Combination", "Method", "Weighting"]
