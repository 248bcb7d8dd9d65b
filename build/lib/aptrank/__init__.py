"""aptrank: the multi-task ranking pipeline for feed recommenders.

The rooms install as one namespace: ``aptrank.data`` (ETL, FeatureSpec), ``aptrank.models``
(rankers), ``aptrank.apt`` (task-aware optimization, usable with any PyTorch model),
``aptrank.pipeline`` (training, tracking, registry, the job), ``aptrank.serving`` (scorers).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.2.0"

# In a source checkout the rooms sit beside this folder (`apt/`, `data/`, ... at the repository's
# top level); the wheel maps them under `aptrank/` (setup.py). Looking in the checkout's root as
# well makes `aptrank.apt` resolve to the checkout's own `apt/` in every worktree, whichever
# checkout the editable install points at.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.py").is_file() and (_checkout / "apt" / "__init__.py").is_file():
    __path__.append(str(_checkout))
