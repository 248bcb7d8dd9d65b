"""numpy's huge-page advice is off while an ETL job runs, restored after, and left to the user who
sets ``NUMPY_MADVISE_HUGEPAGE`` (``data/etl/hugepages.py``; the measurement is in its docstring)."""

from __future__ import annotations

from pathlib import Path

import pytest
from etl_helpers import config, handmade_source
from numpy._core import multiarray

from aptrank.data.etl.hugepages import ENV
from aptrank.data.etl.run import run_etl


def numpy_advice() -> bool:
    """numpy's current huge-page advice (read by setting it and putting it back)."""
    current = multiarray._set_madvise_hugepage(False)
    multiarray._set_madvise_hugepage(current)
    return bool(current)


def advice_seen_by_stages(tmp_path: Path) -> list[bool]:
    seen: list[bool] = []
    run_etl(
        "canonical",
        handmade_source(tmp_path / "src"),
        tmp_path / "out",
        config(),
        progress=lambda _m: seen.append(numpy_advice()),
    )
    return seen


@pytest.mark.parametrize("before", [True, False])
def test_advice_is_off_during_the_job_and_restored_after(
    before: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    previous = multiarray._set_madvise_hugepage(before)
    try:
        seen = advice_seen_by_stages(tmp_path)
        assert len(seen) > 5 and not any(seen)
        assert numpy_advice() is before
    finally:
        multiarray._set_madvise_hugepage(previous)


def test_an_explicit_environment_setting_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")
    previous = multiarray._set_madvise_hugepage(True)
    try:
        seen = advice_seen_by_stages(tmp_path)
        assert seen and all(seen)
    finally:
        multiarray._set_madvise_hugepage(previous)
