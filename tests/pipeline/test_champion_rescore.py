"""Issue #20: the champion is never rescored with features newer than the challenger's window.

Version 1 is trained on the whole shipped sample: its bundled snapshot runs to the end of Apr 30.
A second window that stops at noon on Apr 30 (test split: that morning) has the same FeatureSpec
apart from the cutoff: the champion is scored with the challenger's own evaluation snapshot (as of
the test split's start), not with its bundled one, which has seen the morning it is scored on. A
third window tests on Apr 29 with other split dates (another FeatureSpec): no leak-free comparison
exists, so the gate refuses (exit 3) and records why. Real ``aptrank run`` processes, real ETL,
real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pipeline.test_promotion import FAST, NAME, ROOT, registry, run_job

TASKS = ("click", "like", "finish")


def etl_window(tmp_path: Path, kuairand_dir: Path, name: str, change: dict[str, Any]) -> tuple[Path, Path]:
    """(ETL output, its config file) of the shipped ETL config with ``change`` applied."""
    from aptrank.data.etl.config import config_from_dict
    from aptrank.data.etl.run import run_etl

    raw = yaml.safe_load((ROOT / "configs" / "etl" / "kuairand.yaml").read_text())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    raw.setdefault("validation", {})["max_reject_rate"] = 1.0  # events after the window are out of range
    config = tmp_path / f"etl-{name}.yaml"
    config.write_text(yaml.safe_dump(raw))  # the job's evaluation as served reruns this ETL config
    run_etl("kuairand", kuairand_dir, tmp_path / name, config_from_dict(raw))
    return tmp_path / name, config


def test_champion_is_rescored_without_seeing_the_challengers_window(
    tmp_path: Path, etl_dir: Path, kuairand_dir: Path
) -> None:
    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.champion_rescore import snapshot_cutoff, split_start
    from aptrank.pipeline.config import load_config
    from aptrank.pipeline.served_evaluation import snapshot_as_of_split, with_snapshot_of
    from aptrank.pipeline.version_eval import evaluate_version

    work, overrides = tmp_path / "work", [*FAST, "gate.floor_margin=-1"]
    code, first = run_job(work, etl_dir, overrides)
    assert code == 0 and first["gate"]["decision"] == "promoted", first
    noon, noon_config = etl_window(tmp_path, kuairand_dir, "noon", {"time_range": {"end": "2022-04-30T12:00:00"}})
    champion_cutoff, noon_start = (
        snapshot_cutoff(FeatureSpec.read(etl_dir)),
        split_start(FeatureSpec.read(noon), "test"),
    )
    assert champion_cutoff > noon_start  # the champion's bundled snapshot has seen the window

    code, second = run_job(work, noon, [*overrides, f"data.etl_config={noon_config}"])
    assert code in (0, 3) and second["gate"]["champion_rescored"] is True, second
    tags = registry(work)[0]["2"]
    rescored = {t: float(tags[f"aptrank.gate.champion_auc.{t}"]) for t in TASKS}
    uri, tracking = f"models:/{NAME}/1", f"sqlite:///{work}/mlflow.db"
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"data.etl_config={noon_config}"])
    as_of = snapshot_as_of_split(cfg.data, noon, "test", tmp_path / "as-of").features
    fair = evaluate_version(uri, tracking, noon, "test", snapshot=with_snapshot_of(etl_dir, as_of, tmp_path / "fair"))
    leaky = evaluate_version(uri, tracking, noon, "test")  # the bundled snapshot, as of the end of Apr 30
    assert rescored == pytest.approx(fair, abs=1e-12) and rescored != pytest.approx(leaky, abs=1e-6)

    early, early_config = etl_window(
        tmp_path,
        kuairand_dir,
        "early",
        {"time_range": {"end": "2022-04-30"}, "splits": {"valid_start": "2022-04-28", "test_start": "2022-04-29"}},
    )
    code, third = run_job(work, early, [*overrides, f"data.etl_config={early_config}"])
    assert code == 3 and third["exit_code"] == 3 and third["gate"]["decision"] == "refused", third
    reason = third["gate"]["reason"]
    assert reason.startswith("no leak-free comparison: champion version") and "after the evaluation split's" in reason
    versions, aliases = registry(work)
    assert versions["3"]["aptrank.gate.reason"] == reason and versions["3"]["aptrank.gate.decision"] == "refused"
    assert aliases["champion"] in ("1", "2") and aliases["challenger"] == "3"
