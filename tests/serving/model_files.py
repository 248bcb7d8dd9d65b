"""Model files made by tests, with the ``.sha256`` sidecar the scorers require (as ``aptrank export``
writes it; :mod:`aptrank.serving.model_integrity`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from aptrank.serving.model_integrity import content_digest, sidecar, write_sidecar


def signed(path: Path) -> Path:
    """``path`` with its content digest written beside it, as the export does."""
    write_sidecar(path, content_digest(path))
    return path


def copy_model(src: Path, dst: Path) -> Path:
    """``src`` and its sidecar copied to ``dst``."""
    shutil.copyfile(src, dst)
    shutil.copyfile(sidecar(src), sidecar(dst))
    return dst
