"""Shared serving fixtures: the real ETL on the shipped KuaiRand sample, a tiny real training (1
epoch, 5 steps) exported by ``aptrank export`` through the parity gate, a second version of that
model, and an MLflow registry (SQLite in a temporary folder) with a ``champion`` alias whose run
carries the feature snapshot."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

from tests.serving.model_files import signed
from tests.tiny import TINY_MMOE

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from aptrank.serving.scorer import Scorer

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = {"click": 1.0, "like": 2.0, "finish": 1.0}
TINY = [*TINY_MMOE, "train.max_steps_per_epoch=5", "train.eval_batch_size=8192"]
FEATURE_PARTS = ("feature_spec.json", "vocab", "snapshot")
NAME = "aptrank-pyfunc"
URI = f"models:/{NAME}@champion"
"""The scorer model (serving.pyfunc_model) of the tiny training, registered as its champion."""


@pytest.fixture(scope="session")
def etl_dir(tmp_path_factory: pytest.TempPathFactory, kuairand_dir: Path) -> Path:
    from aptrank.data.etl.config import load_config
    from aptrank.data.etl.run import run_etl

    out = tmp_path_factory.mktemp("etl")
    run_etl("kuairand", kuairand_dir, out, load_config(ROOT / "configs" / "etl" / "kuairand.yaml"))
    return out


def train(etl_dir: Path, run_dir: Path, seed: int) -> Path:
    """A real 1-epoch tiny training with ``pipeline.trainer.Trainer``; returns its run folder."""
    from aptrank.pipeline.config import load_config
    from aptrank.pipeline.trainer import Trainer

    cfg = load_config(None, [*TINY, f"seed={seed}", f"data.features={etl_dir}"])
    Trainer(cfg, etl_dir, run_dir, progress=False).fit()
    return run_dir


def export(run_dir: Path, etl_dir: Path, out: Path) -> Path:
    """``aptrank export`` on a run folder; its JSON summary is kept as ``out`` with suffix .json."""
    from typer.testing import CliRunner

    from aptrank.pipeline.cli import app

    result = CliRunner().invoke(
        app, ["export", "--run-id", str(run_dir), "--out", str(out), "--features", str(etl_dir)]
    )
    assert result.exit_code == 0, result.output
    out.with_suffix(".json").write_text(result.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="session")
def run_dir(etl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(etl_dir, tmp_path_factory.mktemp("run0"), seed=0)


@pytest.fixture(scope="session")
def model_path(run_dir: Path, etl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(run_dir, etl_dir, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def other_model_path(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second version of ``model_path``: every tower's output bias raised by 0.5 in the ONNX graph
    (same FeatureSpec and metadata, different scores): ``towers.K.out.bias``, or the export's stacked
    towers' last bias, one [T, 1, 1] tensor (:class:`aptrank.models.layers.StackedTowers`)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_path))
    raised = 0
    for init in proto.graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name.endswith(".out.bias") or ("bias" in init.name and value.ndim == 3 and value.shape[1:] == (1, 1)):
            init.CopyFrom(numpy_helper.from_array(value + 0.5, init.name))
            raised += 1
    assert raised, f"no tower output bias among {[i.name for i in proto.graph.initializer]}"
    out = tmp_path_factory.mktemp("onnx1") / "model.onnx"
    onnx.save(proto, str(out))
    return signed(out)


@pytest.fixture(scope="session")
def candidates(kuairand_dir: Path) -> pl.DataFrame:
    """Real candidate rows: the last 3,000 impressions of the sample, canonical columns (adapter)."""
    from aptrank.data.adapters import load_source

    return load_source("kuairand", kuairand_dir).events.select("user_id", "item_id", "ts", "tab").tail(3000).collect()


@pytest.fixture(scope="session")
def scorer(model_path: Path, etl_dir: Path) -> Scorer:
    from aptrank.serving.scorer import load_scorer

    return load_scorer(model_path, etl_dir, weights=WEIGHTS)


@dataclass
class Registry:
    uri: str
    workdir: Path

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, name: str, model: Path, run_dir: Path, etl_dir: Path | None, alias: str = "champion") -> str:
        """Log ``model`` to a new run (with the snapshot under ``features/`` when ``etl_dir`` is given),
        register it with ``pipeline.registry`` and point ``alias`` at it; returns the version."""
        import json

        from aptrank.pipeline.mlflow_store import ensure_experiment
        from aptrank.pipeline.registry import register_version

        client = self.client()
        exp = ensure_experiment(client, "serving-tests", (self.workdir / "artifacts").as_uri())
        run_id = client.create_run(exp).info.run_id
        if etl_dir is not None:
            client.log_artifact(run_id, str(etl_dir / FEATURE_PARTS[0]), "features")
            for part in FEATURE_PARTS[1:]:
                client.log_artifacts(run_id, str(etl_dir / part), f"features/{part}")
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
        reg = register_version(
            client, name, run_id, model, key=f"{name}-{run_id}", evaluation=evaluation, window="2022-04-25..2022-04-30"
        )
        version = str(reg.version.version)
        client.set_registered_model_alias(name, alias, version)
        client.set_terminated(run_id)
        return version


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("mlflow")
    yield Registry(f"sqlite:///{workdir / 'mlflow.db'}", workdir)


@pytest.fixture(scope="session")
def champion(registry: Registry, model_path: Path, run_dir: Path, etl_dir: Path) -> str:
    """``models:/aptrank-serving@champion`` -> version 1 of ``model_path``, snapshot in its run."""
    registry.register("aptrank-serving", model_path, run_dir, etl_dir)
    return "models:/aptrank-serving@champion"


@pytest.fixture(scope="session")
def raw_test(kuairand_dir: Path, etl_dir: Path) -> pl.DataFrame:
    from aptrank.pipeline.scorer_model import raw_split_rows

    return raw_split_rows("kuairand", kuairand_dir, etl_dir, "test")


@pytest.fixture(scope="session")
def scorer_model(model_path: Path, etl_dir: Path, raw_test: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.scorer_model import ScorerModel, assemble, to_pandas_candidates

    files = assemble(model_path, etl_dir, WEIGHTS, tmp_path_factory.mktemp("scorer-artifacts"))
    return ScorerModel(files, to_pandas_candidates(raw_test.head(5), FeatureSpec.read(etl_dir)))


@pytest.fixture(scope="session")
def registered(registry: Registry, scorer_model, run_dir: Path) -> str:
    """The scorer model registered by ``pipeline.registry.register_version`` as ``NAME@champion``
    (its run carries no ``features/``: the model brings its own snapshot)."""
    registry.register(NAME, scorer_model, run_dir, None)  # type: ignore[arg-type]
    return URI


@pytest.fixture(scope="session")
def pyfunc(registered: str, registry: Registry):
    import mlflow.pyfunc

    from aptrank.pipeline.mlflow_store import fluent_uri

    with fluent_uri(registry.uri):
        return mlflow.pyfunc.load_model(registered)


@pytest.fixture(scope="module")
def spark(monkeypatch_module: pytest.MonkeyPatch):
    """A local[1] Spark session whose Python workers import aptrank from this checkout."""
    from pyspark.sql import SparkSession

    from aptrank.data.etl.spark import java_home

    monkeypatch_module.setenv("PYTHONPATH", str(ROOT))  # the Python workers import aptrank from this checkout
    monkeypatch_module.setenv("PYSPARK_PYTHON", sys.executable)  # and run in this venv
    if home := java_home():
        monkeypatch_module.setenv("JAVA_HOME", home)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("aptrank-pyfunc-test")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp
