"""Per-epoch checkpoints: written atomically, so a crash never leaves a half-written file.

A checkpoint holds everything an exact resume needs: model and optimizer state (the ``apt`` engine
includes its method state and RNG), the torch RNG, the early-stopping state and the history. The
sampler needs no state: epoch ``e`` shuffles from ``(seed, e)``.

Checkpoints are read with ``torch.load(weights_only=True)`` (tensors, containers and plain Python
values only), so a crafted ``last.pt`` cannot run code under ``export`` or ``train --resume``
(issue #20); a file that needs more is refused with :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best_model.pt"


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CheckpointError(ValueError):
    """A checkpoint file is not a plain-data checkpoint (or not a checkpoint at all)."""


def load(path: Path) -> Any:
    """The checkpoint at ``path``, loaded without running code from it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError for a crafted file, RuntimeError/EOFError when corrupt
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: not a plain-data checkpoint (weights_only load failed: {first})"
        ) from e


def last_path(run_dir: Path) -> Path:
    return run_dir / LAST


def best_path(run_dir: Path) -> Path:
    return run_dir / BEST
