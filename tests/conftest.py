"""Shared test fixtures: the shipped real KuaiRand sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.adapters import SAMPLE_DIR


@pytest.fixture(scope="session")
def kuairand_dir() -> Path:
    """The real KuaiRand-Pure sample shipped under data/samples/kuairand-pure (CC BY-SA 4.0)."""
    return SAMPLE_DIR
