"""Is a model file the one that was exported, and are its weights numbers? (issue #20)

* **Non-finite initializers**: a graph whose weights hold NaN or Inf scores ``null``; every entry
  (export, registration, model load, hot swap: they all go through
  :func:`aptrank.serving.onnx_model.load_onnx` or call :func:`check_finite`) refuses it.
* **Content digest**: SHA-256 of the graph with all its tensors inline (``onnx.load`` reads
  external data files back in, so an MLflow-logged model, whose weights live in a separate
  ``*.data`` file, has the same kind of digest as a single ``.onnx`` file). The export writes it
  beside the model as ``<model>.onnx.sha256``; the registry records it as the version tag
  :data:`TAG_SHA256`; scorers verify it before loading, so tampered weights are refused. A model
  with no digest at all (no sidecar, no tag) is refused too, unless the scorer is started with
  :data:`ALLOW_UNVERIFIED_FLAG` (logged as a warning). A registry download gets the tag written
  as its sidecar, and a registered scorer model bundles ``model.onnx.sha256`` beside ``model.onnx``,
  so ``mlflow.pyfunc.load_model`` verifies it too.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from aptrank.serving.errors import ModelLoadError

DIGEST_SUFFIX = ".sha256"
TAG_SHA256 = "aptrank.model_sha256"
ALLOW_UNVERIFIED_FLAG = "--allow-unverified-model"
"""The scorers' opt-out for a model that carries no digest (e.g. an ONNX file exported elsewhere)."""

log = logging.getLogger(__name__)


def _load(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, OSError, ValidationError for bad files
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({e})") from e


def non_finite_initializers(path: str | Path) -> list[str]:
    """Names of the graph's floating-point initializers (and Constant-node tensors) holding NaN/Inf."""
    from onnx import numpy_helper

    model = _load(Path(path))
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    bad = []
    for name, tensor in tensors:
        values = numpy_helper.to_array(tensor)
        if np.issubdtype(values.dtype, np.floating) and not bool(np.isfinite(values).all()):
            bad.append(name)
    return bad


def check_finite(path: str | Path) -> None:
    """Raise :class:`ModelLoadError` naming the file and tensors when any weight is NaN/Inf."""
    bad = non_finite_initializers(path)
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise ModelLoadError(f"{path}: refused: non-finite (NaN/Inf) weights in initializer(s) {shown}")


def content_digest(path: str | Path) -> str:
    """Hex SHA-256 of the model with its tensors inline (see the module docstring)."""
    return hashlib.sha256(_load(Path(path)).SerializeToString()).hexdigest()


def sidecar(path: str | Path) -> Path:
    """Where the export keeps ``path``'s digest."""
    p = Path(path)
    return p.with_name(p.name + DIGEST_SUFFIX)


def write_sidecar(path: str | Path, digest: str) -> Path:
    """Write ``digest`` as ``path``'s sidecar, atomically."""
    import os

    out = sidecar(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(digest + "\n")
    os.replace(tmp, out)
    return out


def verify_digest(path: str | Path, expected: str, origin: str) -> None:
    """Raise :class:`ModelLoadError` when ``path``'s content digest is not ``expected`` (from ``origin``)."""
    actual = content_digest(path)
    if actual != expected.strip().lower():
        raise ModelLoadError(
            f"{path}: refused: SHA-256 {actual[:16]}... does not match {expected.strip()[:16]}... recorded in "
            f"{origin}; the model file was changed after export"
        )


def verify_sidecar(path: str | Path, *, allow_unverified: bool = False) -> None:
    """Verify ``path`` against its sidecar digest. Without a sidecar the model is refused, unless
    ``allow_unverified`` (:data:`ALLOW_UNVERIFIED_FLAG`: a user's own ONNX file), which logs a warning."""
    side = sidecar(path)
    if side.is_file():
        verify_digest(path, side.read_text(), str(side))
    elif allow_unverified:
        log.warning("%s: no SHA-256 sidecar %s; loading it unverified (%s)", path, side.name, ALLOW_UNVERIFIED_FLAG)
    else:
        raise ModelLoadError(
            f"{path}: refused: no SHA-256 recorded for it (no {side.name} beside it, no registry tag); "
            f"re-export it with `aptrank export`, or pass {ALLOW_UNVERIFIED_FLAG} to load it unchecked"
        )
