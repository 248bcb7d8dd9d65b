"""Registry and gate on the embedded SQLite store: first model champion, better promoted, worse
refused with the reason in tags, idempotent reruns, ONNX versions that load and predict, and a
failed registration that leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import onnxruntime as ort
import pytest
from mlflow import MlflowClient
from test_tracking_support import TASKS, job_config, split_metrics, tiny_onnx, write_features

from aptrank.pipeline.gate import GateError, run_gate
from aptrank.pipeline.mlflow_store import ENV_URI
from aptrank.pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_AUC,
    TAG_EVAL_FEATURES,
    TAG_KEY,
    RegistryError,
    download_model,
    find_version,
    register_version,
)
from aptrank.pipeline.tracking import TrackedRun

TOL = 0.002
WINDOW = "test:2022-04-30"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One SQLite store for the module (each test uses its own registered model)."""
    root = tmp_path_factory.mktemp("registry")
    write_features(root / "features")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_URI, raising=False)  # the config's URI must be the one used
        run = TrackedRun(job_config("probe"), root / "work")
        yield {
            "root": root,
            "uri": run.uri,
            "client": run.client,
            "onnx": tiny_onnx(root / "model.onnx"),
            "onnx_b": tiny_onnx(root / "model_b.onnx", scale=-0.2),
        }


def register(
    store: dict[str, Any],
    name: str,
    aucs: list[float],
    *,
    key: str | None = None,
    window: str = WINDOW,
    model: Path | None = None,
    alias: str = CHALLENGER,
    tags: dict[str, str] | None = None,
) -> Any:
    """One tracked run of job ``name`` whose test AUCs are ``aucs``, registered with ``key``."""
    cfg = job_config(name, tracking={"uri": store["uri"], "experiment": "registry-tests"})
    evaluation = {"tasks": list(TASKS), "test": split_metrics(dict(zip(TASKS, aucs, strict=True)))}
    with TrackedRun(cfg, store["root"] / "work") as run:
        return register_version(
            run.client,
            name,
            run.run_id,
            model or store["onnx"],
            key=key or f"{name}-{aucs}",
            evaluation=evaluation,
            window=window,
            alias=alias,
            tags=tags,
        )


def vnum(version: Any) -> str:
    """A version number as text (the SQL store gives ints, the REST client strings)."""
    return str(version.version)


def versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(vnum(v) for v in client.search_model_versions(f'name = "{name}"'))


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_first_model_becomes_champion(store: dict[str, Any]) -> None:
    client = store["client"]
    reg = register(store, "first", [0.70, 0.60, 0.65])
    assert reg.created and vnum(reg.version) == "1"
    assert reg.version.tags[TAG_AUC + "click"] == "0.7"
    assert os.environ.get(ENV_URI) is None  # logging the ONNX model borrowed the global URI and gave it back
    assert aliases(client, "first") == {CHALLENGER: "1"}
    decision = run_gate(client, "first", "1", tolerance=TOL)
    assert decision.promoted and "first model" in decision.reason and decision.champion_version is None
    assert vnum(client.get_model_version_by_alias("first", CHAMPION)) == "1"
    tags = client.get_model_version("first", "1").tags
    assert tags["aptrank.gate.decision"] == "promoted" and tags["aptrank.gate.champion_version"] == "none"


def test_better_promoted_worse_refused(store: dict[str, Any]) -> None:
    client, name = store["client"], "ladder"
    run_gate(client, name, vnum(register(store, name, [0.70, 0.60, 0.65]).version), tolerance=TOL)
    # within tolerance on click (-0.0015), better on the others: promoted
    better = vnum(register(store, name, [0.6985, 0.62, 0.66]).version)
    decision = run_gate(client, name, better, tolerance=TOL)
    assert decision.promoted and decision.champion_version == "1"
    assert decision.champion_auc == {"click": 0.70, "like": 0.60, "long_view": 0.65}
    assert vnum(client.get_model_version_by_alias(name, CHAMPION)) == better
    assert client.get_model_version(name, "1").tags["aptrank.gate.superseded_by"] == better
    # click worse by 0.003 > tolerance although the mean is higher: refused, champion unchanged
    worse = vnum(register(store, name, [0.6955, 0.70, 0.70]).version)
    decision = run_gate(client, name, worse, tolerance=TOL)
    assert not decision.promoted
    assert aliases(client, name) == {CHAMPION: better, CHALLENGER: worse}
    tags = client.get_model_version(name, worse).tags
    assert tags["aptrank.gate.decision"] == "refused"
    assert "click 0.6955 vs 0.6985" in tags["aptrank.gate.reason"]
    assert float(tags["aptrank.gate.champion_auc.click"]) == 0.6985
    assert float(tags["aptrank.gate.challenger_auc.click"]) == 0.6955
    assert float(tags["aptrank.gate.tolerance"]) == TOL
    # every task within tolerance but the mean lower: refused
    lower = vnum(register(store, name, [0.6975, 0.619, 0.659]).version)
    decision = run_gate(client, name, lower, tolerance=TOL)
    assert not decision.promoted and "mean AUC" in decision.reason
    assert vnum(client.get_model_version_by_alias(name, CHAMPION)) == better


def test_rerun_with_same_key_finds_existing_version(store: dict[str, Any]) -> None:
    client, name = store["client"], "team's ranker"  # a quote in the name: the search still works
    first = register(store, name, [0.7, 0.6, 0.65], key="k-1")
    again = register(store, name, [0.7, 0.6, 0.65], key="k-1")
    assert first.created and not again.created
    assert vnum(again.version) == vnum(first.version)
    assert versions(client, name) == ["1"]
    assert vnum(find_version(client, name, "k-1")) == "1"
    assert client.get_model_version(name, "1").tags[TAG_KEY] == "k-1"
    assert find_version(client, name, "k-2") is None
    assert vnum(register(store, name, [0.7, 0.6, 0.65], key="k-2").version) == "2"


def test_onnx_version_loads_and_predicts(store: dict[str, Any], tmp_path: Path) -> None:
    reg = register(store, "onnx-model", [0.7, 0.6, 0.65], model=store["onnx_b"])
    assert reg.version.source.startswith("models:/")
    local = download_model(store["client"], "onnx-model", CHALLENGER, tmp_path)
    assert download_model(store["client"], "onnx-model", "1", tmp_path / "by-number").is_dir()
    model = mlflow.pyfunc.load_model(str(local))
    inputs = [i.name for i in model.metadata.get_input_schema().inputs]
    assert inputs == ["categorical", "dense"]
    rng = np.random.default_rng(0)
    batch = {
        "categorical": rng.integers(0, 5, (4, 2)).astype(np.int64),
        "dense": rng.normal(size=(4, 2)).astype(np.float32),
    }
    got = model.predict(batch)["probabilities"]
    want = ort.InferenceSession(str(store["onnx_b"]), providers=["CPUExecutionProvider"]).run(None, batch)[0]
    np.testing.assert_array_equal(got, want)


def test_other_files_register_as_run_artifact(store: dict[str, Any], tmp_path: Path) -> None:
    checkpoint = tmp_path / "ranker.pt"
    checkpoint.write_bytes(b"not onnx, any model file")
    reg = register(store, "plain-file", [0.7, 0.6, 0.65], model=checkpoint)
    assert reg.version.source.endswith("/model")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=reg.version.source, dst_path=str(tmp_path / "dl"), tracking_uri=store["uri"]
    )
    assert (Path(local) / "ranker.pt").read_bytes() == checkpoint.read_bytes()


def test_failed_registration_leaves_nothing(store: dict[str, Any]) -> None:
    client = store["client"]
    # 'latest' is a reserved alias: MLflow refuses it after the version exists, so it must be undone
    with pytest.raises(RegistryError, match="'latest'.*nothing was left registered"):
        register(store, "undo-new", [0.7, 0.6, 0.65], alias="latest")
    assert client.search_registered_models("name = 'undo-new'") == []
    register(store, "undo-old", [0.7, 0.6, 0.65])
    with pytest.raises(RegistryError, match="nothing was left registered"):
        register(store, "undo-old", [0.71, 0.6, 0.65], alias="latest")
    assert versions(client, "undo-old") == ["1"]
    assert aliases(client, "undo-old") == {CHALLENGER: "1"}


def test_gate_needs_same_window_or_rescore(store: dict[str, Any]) -> None:
    client, name = store["client"], "windows"
    run_gate(client, name, vnum(register(store, name, [0.70, 0.60, 0.65], window="w1").version), tolerance=TOL)
    new = vnum(register(store, name, [0.69, 0.60, 0.65], window="w2").version)
    with pytest.raises(GateError, match="window w1.*window w2"):
        run_gate(client, name, new, tolerance=TOL)
    assert vnum(client.get_model_version_by_alias(name, CHAMPION)) == "1"
    asked: list[tuple[str, str, str]] = []

    def rescore(champion: Any, split: str, window: str) -> dict[str, float]:
        asked.append((vnum(champion), split, window))
        return {"click": 0.68, "like": 0.60, "long_view": 0.65}  # the champion on window w2

    decision = run_gate(client, name, new, tolerance=TOL, rescore=rescore)
    assert asked == [("1", "test", "w2")]
    assert decision.promoted and decision.champion_auc["click"] == 0.68
    assert vnum(client.get_model_version_by_alias(name, CHAMPION)) == new
    again = run_gate(client, name, new, tolerance=TOL)
    assert again.promoted and again.reason == "already the champion"


def test_gate_compares_served_figures_only_with_served_figures(store: dict[str, Any]) -> None:
    client, name = store["client"], "served"
    served = {TAG_EVAL_FEATURES: "served"}
    run_gate(client, name, vnum(register(store, name, [0.70, 0.60, 0.65]).version), tolerance=TOL)  # point-in-time
    first_served = vnum(register(store, name, [0.69, 0.60, 0.65], tags=served).version)
    with pytest.raises(GateError, match="point-in-time features.*served features"):
        run_gate(client, name, first_served, tolerance=TOL)
    assert vnum(client.get_model_version_by_alias(name, CHAMPION)) == "1"
    client.set_registered_model_alias(name, CHAMPION, first_served)  # promoted by hand, as the docs say
    worse = vnum(register(store, name, [0.68, 0.60, 0.65], tags=served).version)
    decision = run_gate(client, name, worse, tolerance=TOL)
    assert not decision.promoted and decision.champion_auc["click"] == 0.69


def test_registration_needs_the_gate_split(store: dict[str, Any]) -> None:
    with TrackedRun(job_config("nosplit", tracking={"uri": store["uri"]}), store["root"] / "work") as run:
        with pytest.raises(RegistryError, match="split 'test' \\(gate.split\\); has: \\['valid'\\]"):
            register_version(
                run.client,
                "nosplit",
                run.run_id,
                store["onnx"],
                key="k",
                evaluation={"valid": split_metrics({"click": 0.7})},
                window=WINDOW,
            )
        with pytest.raises(FileNotFoundError, match="missing.onnx: model file to register does not exist"):
            register_version(
                run.client,
                "nosplit",
                run.run_id,
                store["root"] / "missing.onnx",
                key="k",
                evaluation={"test": split_metrics({"click": 0.7})},
                window=WINDOW,
            )
    assert store["client"].search_registered_models("name = 'nosplit'") == []
