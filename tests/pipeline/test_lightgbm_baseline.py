"""The LightGBM baseline on a small generated log through the real ETL (date splits, so the served
evaluation's snapshot exists): deterministic, well above chance, and both evaluations produced —
point-in-time on the test example files, and as served through the scorers' feature lookup on the
snapshot as of the test day's start (the same snapshot the neural served evaluation uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from aptrank.data.etl.config import load_config
from aptrank.data.etl.run import run_etl
from aptrank.data.synthetic import GeneratorConfig, generate
from aptrank.pipeline.baselines.lightgbm_baseline import (
    LightGBMConfig,
    evaluate_as_served,
    evaluate_point_in_time,
    feature_matrix,
    split_frame,
    train_lightgbm,
)
from aptrank.pipeline.config import DataConfig
from aptrank.pipeline.experiment.variants import merged, variant_etl_raw
from aptrank.pipeline.scorer_model import raw_split_rows
from aptrank.pipeline.served_evaluation import snapshot_as_of_split

ROOT = Path(__file__).resolve().parents[2]
#: The synthetic ETL config split at days (generated log: Apr 8-12, 2022, UTC).
DATE_SPLITS = {"splits": {"valid_start": "2022-04-11", "test_start": "2022-04-12"}}
PARAMS = LightGBMConfig(num_rounds=200, early_stopping_rounds=20, min_data_in_leaf=20, num_leaves=15)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    root = tmp_path_factory.mktemp("lgbm")
    raw = root / "raw"
    generate(raw, GeneratorConfig(users=300, items=200, events=6000, days=5, seed=3, task_correlation=0.5))
    etl_config = root / "etl.yaml"
    base = variant_etl_raw(str(ROOT / "configs" / "etl" / "synthetic.yaml"), None)
    etl_config.write_text(yaml.safe_dump(merged(base, DATE_SPLITS)))
    features = root / "features"
    assert run_etl("canonical", str(raw), features, load_config(etl_config)).passed
    return DataConfig(source="canonical", input=str(raw), etl_config=str(etl_config)), features


def test_feature_matrix_holds_ids_dense_values_and_history_lengths(dataset: tuple[DataConfig, Path]) -> None:
    from aptrank.data.spec import FeatureSpec

    _, features = dataset
    spec = FeatureSpec.read(features)
    frame = split_frame(features, "test")
    matrix = feature_matrix(frame, spec)
    assert matrix.values.shape == (frame.height, len(spec.categorical) + len(spec.dense) + len(spec.sequence))
    assert matrix.categorical == list(range(len(spec.categorical)))
    first_history = spec.sequence[0]
    lengths = frame[first_history.name].list.len().clip(upper_bound=first_history.max_len).to_numpy()
    np.testing.assert_array_equal(matrix.values[:, matrix.names.index(f"{first_history.name}_length")], lengths)
    assert lengths.max() > 0  # the histories are not all empty: the column carries information


def test_same_seed_same_models_and_auc_well_above_chance(dataset: tuple[DataConfig, Path]) -> None:
    _, features = dataset
    first, second = train_lightgbm(features, PARAMS, seed=5), train_lightgbm(features, PARAMS, seed=5)
    a, b = evaluate_point_in_time(first, features), evaluate_point_in_time(second, features)
    assert a == b
    assert first.best_rounds == second.best_rounds
    assert all(1 <= r < PARAMS.num_rounds for r in first.best_rounds.values())  # early stopping stopped
    aucs = {t: m["auc"] for t, m in a["tasks"].items()}
    assert set(aucs) == {"click", "like", "finish"}
    # click (44% positive) and finish (16%) have enough test positives for a tight AUC; like (~1.5%,
    # a dozen test positives) is only required to be a number
    assert aucs["click"] > 0.63 and aucs["finish"] > 0.6 and 0.0 < aucs["like"] < 1.0, aucs
    assert a["rows"] == split_frame(features, "test").height


def test_served_evaluation_scores_raw_rows_with_the_test_day_snapshot(
    dataset: tuple[DataConfig, Path], tmp_path: Path
) -> None:
    data, features = dataset
    models = train_lightgbm(features, PARAMS, seed=0)
    snapshot = snapshot_as_of_split(data, features, "test", tmp_path)
    assert snapshot.cutoff < "2022-04-12T00:00:00"  # before the test day: what serving had then
    rows = raw_split_rows(data.source, data.input, features, "test")
    served = evaluate_as_served(models, snapshot.features, rows)
    point_in_time = evaluate_point_in_time(models, features)
    assert served["rows"] == point_in_time["rows"] == rows.height
    for task in ("click", "finish"):
        auc, pit = served["tasks"][task]["auc"], point_in_time["tasks"][task]["auc"]
        assert auc > 0.6, (task, auc)
        assert abs(auc - pit) < 0.05  # frozen features cost a little, not everything
    # frozen features are not the point-in-time ones: the two evaluations see different inputs
    assert any(served["tasks"][t]["auc"] != point_in_time["tasks"][t]["auc"] for t in served["tasks"])
