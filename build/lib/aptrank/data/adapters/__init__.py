"""Source adapters: each maps one source's files onto the canonical tables of :mod:`data.schema`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aptrank.data.adapters import canonical, kuairand
from aptrank.data.adapters.base import CanonicalTables, SourceError

SOURCES: dict[str, Callable[[Path], CanonicalTables]] = {
    "kuairand": kuairand.load,
    "canonical": canonical.load,
}

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples" / "kuairand-pure"
"""The shipped real KuaiRand sample (CC BY-SA 4.0, see its README)."""


def load_source(name: str, path: str | Path) -> CanonicalTables:
    """Canonical tables of source ``name`` read from ``path`` (lazy; schema checked)."""
    if name not in SOURCES:
        raise SourceError(f"unknown source '{name}'; known sources: {', '.join(sorted(SOURCES))}")
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: input path does not exist")
    return SOURCES[name](p)


__all__ = ["SAMPLE_DIR", "SOURCES", "CanonicalTables", "SourceError", "load_source"]
