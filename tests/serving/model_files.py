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


def with_metadata(src: Path, dst: Path, **meta: str | None) -> Path:
    """``src`` saved as ``dst`` (signed) with the ONNX metadata ``meta`` set (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k: v for k, v in meta.items() if v is not None})
    for k in [k for k, v in meta.items() if v is None]:
        props.pop(k)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(dst))
    return signed(dst)
