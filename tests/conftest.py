"""Shared test fixtures: the shipped real KuaiRand sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from aptrank.data.adapters import SAMPLE_DIR


@pytest.fixture(scope="session")
def kuairand_dir() -> Path:
    """The real KuaiRand-Pure sample shipped under data/samples/kuairand-pure (CC BY-SA 4.0)."""
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def etl_dir(tmp_path_factory: pytest.TempPathFactory, kuairand_dir: Path) -> Path:
    """The real ETL run once per session on the shipped KuaiRand sample (configs/etl/kuairand.yaml)."""
    from aptrank.data.etl.config import load_config
    from aptrank.data.etl.run import run_etl

    out = tmp_path_factory.mktemp("etl")
    root = Path(__file__).resolve().parents[1]
    run_etl("kuairand", kuairand_dir, out, load_config(root / "configs" / "etl" / "kuairand.yaml"))
    return out


@pytest.fixture(scope="session")
def app():
    """The real ``aptrank`` CLI app (command modules import their heavy parts lazily)."""
    from aptrank.pipeline.cli import app

    return app
