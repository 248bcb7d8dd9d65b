"""An ETL output folder that is either a whole, finished run or the previous one (issue #20).

:func:`run_staged` runs the ETL into a hidden sibling folder (``.<out>.staging-<pid>``) and swaps it
in for ``out`` only when the run returns; a run that raises (bad input, disk full, a kill) leaves
``out`` exactly as it was and removes its staging folder (a killed run's is removed by the next
run). Outputs whose data-quality gate failed are still swapped in, for inspection, but carry the
marker file :data:`GATE_FAILED` (the failures, one per line), and :func:`require_passed` refuses
them: ``aptrank train`` and the job never learn from data their own ETL rejected.

The swap is two renames on one file system (``out`` -> ``.<out>.old-<pid>``, staging -> ``out``);
between them ``out`` is absent for an instant, never half-written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

GATE_FAILED = "GATE_FAILED"


class GateFailedOutputError(ValueError):
    """An ETL output whose data-quality gate failed was given to training."""


class _Result(Protocol):
    @property
    def passed(self) -> bool: ...

    summary: dict


R = TypeVar("R", bound=_Result)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _leftovers(out: Path) -> list[Path]:
    """Staging and old folders of ``out`` that a killed run left behind."""
    return sorted(out.parent.glob(f".{out.name}.staging-*")) + sorted(out.parent.glob(f".{out.name}.old-*"))


def run_staged(run: Callable[[Path], R], out: str | Path) -> R:
    """``run(staging_dir)``, then swap its folder in as ``out`` (see the module docstring)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _leftovers(out):
        _remove(leftover)
    stage = out.with_name(f".{out.name}.staging-{os.getpid()}")
    try:
        result = run(stage)
        if not result.passed:
            (stage / GATE_FAILED).write_text("\n".join(result.summary["gates"]["failures"]) + "\n")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    _remove(old)
    return result


def require_passed(features: str | Path) -> None:
    """Raise :class:`GateFailedOutputError` when ``features`` carries the :data:`GATE_FAILED` marker."""
    marker = Path(features) / GATE_FAILED
    if marker.is_file():
        failures = "; ".join(line for line in marker.read_text().splitlines() if line)
        raise GateFailedOutputError(
            f"{features}: its ETL data-quality gate failed ({failures}); refusing to train on it "
            f"(fix the input or the gate and rerun the ETL; {marker.name} marks such outputs)"
        )
