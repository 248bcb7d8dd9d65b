"""Per-epoch checkpoints: written atomically, so a crash never leaves a half-written file.

A checkpoint holds everything an exact resume needs: model and optimizer state (the ``apt`` engine
includes its method state and RNG), the torch RNG, the early-stopping state and the history. The
sampler needs no state: epoch ``e`` shuffles from ``(seed, e)``.
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


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return torch.load(path, map_location="cpu", weights_only=False)


def last_path(run_dir: Path) -> Path:
    return run_dir / LAST


def best_path(run_dir: Path) -> Path:
    return run_dir / BEST
