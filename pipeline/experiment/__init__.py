"""``aptrank experiment``: the research grid runner (issue #8).

A grid file (``configs/grids/*.yaml``, :mod:`aptrank.pipeline.experiment.grid`) crosses datasets x arch x
method x optimizer x APT x seed, plus single-task baselines; :func:`run_grid` trains every cell as an
MLflow child run under one parent run, resumes where an earlier run stopped, and writes
``results.md`` / ``results.json`` / plots (:mod:`aptrank.pipeline.experiment.report`).
"""

from aptrank.pipeline.experiment.grid import DatasetDecl, GridError, GridSpec, grid_from_dict, load_grid
from aptrank.pipeline.experiment.runner import GridOutcome, run_grid

__all__ = ["DatasetDecl", "GridError", "GridOutcome", "GridSpec", "grid_from_dict", "load_grid", "run_grid"]
