"""Issue #20, the promotion's bookkeeping on a real SQLite registry, without a training: a version a
crash left before its gate under an older key is abandoned (tag, no ``challenger``), one of the current
key is not; a version gated before step tags existed counts as done; a refused version is final."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from aptrank.pipeline.promotion import GateSettings, abandon_orphans, done_steps, finish
from aptrank.pipeline.registry import CHALLENGER, TAG_AUC, TAG_POPULARITY_AUC, create_version, log_model_file

NAME = "steps"
GATE = GateSettings(tolerance=0.002, floor_margin=0.01, floors={})


def new_version(client: MlflowClient, tmp_path: Path, key: str, auc: float, extra: dict[str, str] | None = None) -> str:
    run_id = client.create_run(client.create_experiment(f"e-{key}", (tmp_path / key).as_uri())).info.run_id
    model = tmp_path / f"{key}.bin"
    model.write_bytes(b"weights")
    source, _ = log_model_file(client, run_id, model)
    tags = {TAG_AUC + "click": repr(auc), TAG_POPULARITY_AUC + "click": "0.66", **(extra or {})}
    return str(create_version(client, NAME, run_id, source, key=key, tags=tags, alias=None).version)


def test_orphans_legacy_versions_and_final_refusals(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    legacy = new_version(client, tmp_path, "k0", 0.70, {"aptrank.gate.decision": "promoted"})
    client.delete_model_version_tag(NAME, legacy, "aptrank.step.created")  # as registered before step tags
    client.delete_model_version_tag(NAME, legacy, "aptrank.step.logged")
    everything = {"logged", "created", "challenger", "gated", "champion"}
    assert done_steps(client.get_model_version(NAME, legacy)) == everything

    orphan = new_version(client, tmp_path, "k1", 0.71)
    client.set_registered_model_alias(NAME, CHALLENGER, orphan)
    current = new_version(client, tmp_path, "k2", 0.50)
    assert abandon_orphans(client, NAME, "k2") == [orphan]
    assert client.get_model_version(NAME, orphan).tags["aptrank.step.abandoned"] == "done"
    assert CHALLENGER not in client.get_registered_model(NAME).aliases
    assert abandon_orphans(client, NAME, "k2") == []  # reported once

    refused = finish(client, NAME, current, GATE)
    assert not refused.decision.promoted and "below the floor" in refused.decision.reason
    assert refused.resumed == ("challenger", "gated")
    again = finish(client, NAME, current, GATE)
    assert again.resumed == () and not again.decision.promoted and again.decision.reason == refused.decision.reason
    assert client.get_registered_model(NAME).aliases == {CHALLENGER: int(current)}
