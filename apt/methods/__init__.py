"""MTL methods by name: ``METHODS[name](num_tasks, generator=..., **kwargs)``.

Aggregators read the task-gradient Gram matrix: ew, mgda, pcgrad, cagrad, nash_mtl, imgrad,
sdmgrad, aligned_mtl, conicgrad, upgrad, fairgrad, db_mtl. Loss weightings change w_k: uw, dwa,
gradnorm, rlw, famo. See apt/README.md.
"""

from __future__ import annotations

from aptrank.apt.methods.aligned_mtl import AlignedMTL
from aptrank.apt.methods.base import Combination, Method, Weighting
from aptrank.apt.methods.cagrad import CAGrad
from aptrank.apt.methods.conicgrad import ConicGrad
from aptrank.apt.methods.dbmtl import DBMTL
from aptrank.apt.methods.dwa import DWA
from aptrank.apt.methods.ew import EW
from aptrank.apt.methods.fairgrad import FairGrad
from aptrank.apt.methods.famo import FAMO
from aptrank.apt.methods.gradnorm import GradNorm
from aptrank.apt.methods.imgrad import IMGrad
from aptrank.apt.methods.mgda import MGDA
from aptrank.apt.methods.nash_mtl import NashMTL
from aptrank.apt.methods.pcgrad import PCGrad
from aptrank.apt.methods.rlw import RLW
from aptrank.apt.methods.sdmgrad import SDMGrad
from aptrank.apt.methods.upgrad import UPGrad
from aptrank.apt.methods.uw import UW

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        *(EW, MGDA, PCGrad, CAGrad, NashMTL, IMGrad, SDMGrad, AlignedMTL, ConicGrad, UPGrad, FairGrad, DBMTL),
        *(UW, DWA, GradNorm, RLW, FAMO),
    )
}

AGGREGATORS = (
    *("ew", "mgda", "pcgrad", "cagrad", "nash_mtl", "imgrad", "sdmgrad", "aligned_mtl"),
    *("conicgrad", "upgrad", "fairgrad", "db_mtl"),
)
WEIGHTINGS = ("uw", "dwa", "gradnorm", "rlw", "famo")

__all__ = ["AGGREGATORS", "METHODS", "WEIGHTINGS", "Combination", "Method", "Weighting"]
