"""The gate rule, the idempotency key and the input fingerprint, without a store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_tracking_support import job_config, write_features

from aptrank.pipeline.gate import GateDecision, decide
from aptrank.pipeline.provenance import fingerprint
from aptrank.pipeline.registry import version_key

CHAMP = {"click": 0.70, "like": 0.60, "finish": 0.65}


@pytest.mark.parametrize(
    "challenger, promoted, words",
    [
        ({"click": 0.70, "like": 0.60, "finish": 0.65}, True, "mean AUC 0.6500 >= champion's 0.6500"),  # a tie passes
        ({"click": 0.6981, "like": 0.61, "finish": 0.65}, True, "no task worse by more than 0.002"),
        ({"click": 0.6979, "like": 0.70, "finish": 0.70}, False, "click 0.6979 vs 0.7000 (-0.0021)"),
        ({"click": 0.699, "like": 0.599, "finish": 0.651}, False, "mean AUC 0.6497 is lower"),
        ({"click": 0.80, "like": 0.80}, False, "no AUC for the champion's task(s) ['finish']"),
        ({"click": 0.80, "like": 0.80, "finish": math.nan}, False, "not finite for task(s) ['finish']"),
    ],
)
def test_rule(challenger: dict[str, float], promoted: bool, words: str) -> None:
    ok, reason = decide(challenger, CHAMP, 0.002)
    assert ok is promoted
    assert words in reason


def test_first_model_and_extra_tasks() -> None:
    assert decide({"click": 0.1}, None, 0.002) == (
        True,
        "first model of the registered model: promoted without comparison",
    )
    ok, _ = decide({**CHAMP, "share": 0.1}, CHAMP, 0.0)  # a task the champion lacks is not compared
    assert ok


def test_task_nan_for_both_is_skipped_from_the_mean() -> None:
    champ = {"click": 0.70, "like": math.nan}
    assert decide({"click": 0.71, "like": math.nan}, champ, 0.0)[0]
    ok, reason = decide({"click": 0.69, "like": 0.99}, champ, 0.0)  # like is not comparable, click is worse
    assert not ok and "click" in reason
    assert decide({"like": math.nan, "click": math.nan}, {"like": math.nan}, 0.0) == (
        False,
        "no task has a finite AUC for both models",
    )


@pytest.mark.parametrize("tol", [-0.001, math.inf, math.nan])
def test_tolerance_must_be_finite_and_non_negative(tol: float) -> None:
    with pytest.raises(ValueError, match="gate.auc_tolerance must be a finite number >= 0"):
        decide(CHAMP, CHAMP, tol)


def test_decision_tags_hold_the_numbers() -> None:
    d = GateDecision(False, "why", "3", "2", 0.002, {"click": 0.6979}, {"click": 0.7})
    assert d.tags() == {
        "aptrank.gate.decision": "refused",
        "aptrank.gate.reason": "why",
        "aptrank.gate.tolerance": "0.002",
        "aptrank.gate.champion_version": "2",
        "aptrank.gate.challenger_auc.click": "0.6979",
        "aptrank.gate.champion_auc.click": "0.7",
    }


def test_version_key_follows_model_defining_config_and_inputs() -> None:
    base = job_config("keyed")
    key = version_key(base, "inputs-1")
    assert key == version_key(job_config("keyed"), "inputs-1")
    assert len(key) == 64
    assert version_key(job_config("keyed", tracking={"uri": "http://elsewhere:5000"}), "inputs-1") == key
    assert version_key(job_config("keyed", gate={"auc_tolerance": 0.01}), "inputs-1") == key
    assert version_key(job_config("keyed", train={"epochs": 4}), "inputs-1") != key
    assert version_key(job_config("keyed", seed=4), "inputs-1") != key
    assert version_key(base, "inputs-2") != key


def test_fingerprint_changes_with_any_byte_and_names_missing_parts(tmp_path: Path) -> None:
    write_features(tmp_path / "a")
    write_features(tmp_path / "b")
    assert fingerprint(tmp_path / "a") == fingerprint(tmp_path / "b")  # same files, other folder
    window = fingerprint(tmp_path / "a", ("test",))
    assert window != fingerprint(tmp_path / "a", ("valid",))
    part = tmp_path / "b" / "train" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[:-1] + bytes([part.read_bytes()[-1] ^ 1]))
    assert fingerprint(tmp_path / "a") != fingerprint(tmp_path / "b")
    assert fingerprint(tmp_path / "b", ("test",)) == window  # the test window did not change
    (tmp_path / "b" / "train" / "part-1.parquet").write_bytes(b"")
    assert fingerprint(tmp_path / "b", ("train",)) != fingerprint(tmp_path / "a", ("train",))
    with pytest.raises(FileNotFoundError, match="'holdout' missing under"):
        fingerprint(tmp_path / "a", ("holdout",))
