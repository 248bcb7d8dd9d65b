"""Where a run came from: git commit, package versions, a stable hash of the job config, and a
content fingerprint of its input files.

These values go to every MLflow run (params). The config hash and the input fingerprint make the
registry's idempotency key (:func:`pipeline.registry.version_key`), so the config hash must not
change when only the place results are written to changes: the ``tracking`` and ``gate`` sections
are left out. The fingerprint of a split (e.g. ``("test",)``) names an evaluation window.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from aptrank.data.digests import files_digest
from aptrank.pipeline.config import JobConfig

#: Packages whose versions every run records (the ones that change numbers or file formats).
TRACKED_PACKAGES: tuple[str, ...] = ("torch", "torchrec", "polars", "mlflow", "onnxruntime")
#: Config sections that do not change the trained model (where to log it, how to gate it).
UNHASHED_SECTIONS: tuple[str, ...] = ("tracking", "gate")
UNKNOWN = "unknown"
#: The parts of an ETL output folder that define what a model is trained and evaluated on.
INPUT_PARTS: tuple[str, ...] = ("feature_spec.json", "train", "valid", "test")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(repo: str | Path = _REPO_ROOT) -> str:
    """``HEAD`` of the git checkout holding ``repo`` (default: this code's checkout), with a
    ``-dirty`` suffix when tracked files differ from it; ``"unknown"`` outside a git checkout or
    without a ``git`` binary. Read-only: never changes git state."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return UNKNOWN
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    commit = head.stdout.strip()
    return f"{commit}-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else commit


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed distribution version of each package (``"not installed"`` when absent)."""
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces; non-JSON values as str)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_hash(cfg: JobConfig) -> str:
    """Hash of everything in the job config that determines the trained model (all sections but
    :data:`UNHASHED_SECTIONS`)."""
    body = {k: v for k, v in cfg.to_dict().items() if k not in UNHASHED_SECTIONS}
    return canonical_hash(body)


def fingerprint(root: str | Path, parts: Sequence[str] = INPUT_PARTS) -> str:
    """:func:`data.digests.files_digest` over every file in ``parts`` of ``root`` (each a file or a
    folder, walked recursively in sorted order): equal iff the same files hold the same bytes."""
    base = Path(root)
    files: list[Path] = []
    for part in parts:
        p = base / part
        if not p.exists():
            raise FileNotFoundError(f"{p}: '{part}' missing under {base}, cannot fingerprint the inputs")
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files_digest(base, files)
