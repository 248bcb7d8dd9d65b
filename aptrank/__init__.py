"""aptrank: the multi-task ranking pipeline for feed recommenders.

The rooms install as one namespace: ``aptrank.data`` (ETL, FeatureSpec), ``aptrank.models``
(rankers), ``aptrank.apt`` (task-aware optimization, usable with any PyTorch model),
``aptrank.pipeline`` (training, tracking, registry, the job), ``aptrank.serving`` (scorers).

The Python API (:mod:`aptrank.api`) is importable from here: ``aptrank.run_etl``, ``aptrank.train``,
``aptrank.run_job``, ``aptrank.export``, ``aptrank.load_scorer``, ``aptrank.read_candidates``.
They load on first use, so ``import aptrank`` stays cheap (no torch, no Polars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.2.0"

API = ("TrainedModel", "export", "load_scorer", "read_candidates", "run_etl", "run_job", "train")
__all__ = [*API, "__version__"]


def __getattr__(name: str) -> Any:
    """The API functions, imported on first use (PEP 562)."""
    if name in API:
        from aptrank import api

        return getattr(api, name)
    raise AttributeError(f"module 'aptrank' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])


# In a source checkout the rooms sit beside this folder (`apt/`, `data/`, ... at the repository's
# top level); the wheel maps them under `aptrank/` (setup.py). Looking in the checkout's root as
# well makes `aptrank.apt` resolve to the checkout's own `apt/` in every worktree, whichever
# checkout the editable install points at.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.py").is_file() and (_checkout / "apt" / "__init__.py").is_file():
    __path__.append(str(_checkout))
