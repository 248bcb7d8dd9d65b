"""numpy's transparent-huge-page advice, switched off while an ETL job runs.

numpy (>= 1.20, on Linux >= 4.6) calls ``madvise(MADV_HUGEPAGE)`` on every array allocation of
4 MB or more, so the kernel backs it with 2 MB pages, zeroed in full at the first touch. The ETL
allocates and drops hundreds of such short-lived arrays per stage (point-in-time sums, searches,
gathers of millions of rows), and on a VM with ``transparent_hugepage/enabled = madvise`` that
advice cost more than it saved: ``bench/etl.py``'s daily part on the 2-vCPU AMD EPYC VM, the same
10M-event log, numpy's default against ``NUMPY_MADVISE_HUGEPAGE=0``: full recompute 43.0 -> 32.6 s
wall, its point-in-time stage 24.7 -> 13.5 s CPU, the incremental day 10.5 -> 7.1 s (issue #17;
``docs/scaling.md``). Huge pages help programs that keep large arrays and walk them at random for
a long time (fewer TLB misses); an ETL stage streams through fresh arrays once.

The switch is numpy's own (``numpy._core.multiarray._set_madvise_hugepage``, the function behind
its ``NUMPY_MADVISE_HUGEPAGE`` environment variable), set for the duration of a job and restored
after, so a caller's process keeps its own setting. A user who sets ``NUMPY_MADVISE_HUGEPAGE``
explicitly decides: the job then leaves numpy's setting alone. Used by every job entry
(:func:`data.etl.run.run_etl`, :func:`data.etl.bootstrap.bootstrap`, :func:`data.etl.daily.run_day`) and
around the per-partition feature code of the Spark engine's Python workers (:mod:`data.etl.spark`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from numpy._core import multiarray

ENV = "NUMPY_MADVISE_HUGEPAGE"


@contextmanager
def numpy_hugepage_advice_off() -> Iterator[None]:
    """Run the block with numpy's huge-page advice off (unless ``$NUMPY_MADVISE_HUGEPAGE`` is set)."""
    if ENV in os.environ:
        yield
        return
    previous = multiarray._set_madvise_hugepage(False)
    try:
        yield
    finally:
        multiarray._set_madvise_hugepage(previous)
