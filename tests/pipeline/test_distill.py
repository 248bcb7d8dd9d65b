"""Soft labels from the LightGBM teacher (``train.distill``, :mod:`aptrank.pipeline.distill`): the mix
on hand-made numbers and its loss, the folds, the teacher's probabilities being out-of-fold (below
the boosters' in-sample AUC on the same rows), and the trainer reading the soft training split while
it evaluates on the hard labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from aptrank.data.spec import FeatureSpec
from aptrank.pipeline.baselines.lightgbm_baseline import LightGBMConfig, split_frame
from aptrank.pipeline.config import ConfigError, load_config
from aptrank.pipeline.distill import (
    DistillConfig,
    distilled_train_files,
    fold_ids,
    out_of_fold,
    soft_labels,
    teacher_record,
)
from aptrank.pipeline.loader import split_files
from aptrank.pipeline.ranking_metrics import auc
from tests.tiny import TINY_DEMO

ROOT = Path(__file__).resolve().parents[2]
#: Boosters that can memorise rows (small leaves, little smoothing of the 17k user ids): in-sample they
#: look far better than they are, which is what an out-of-fold teacher must not pass on.
MEMORISING = LightGBMConfig(
    num_rounds=25, early_stopping_rounds=25, num_leaves=63, min_data_in_leaf=5, cat_smooth=1.0, lambda_l2=0.0
)


def test_soft_labels_mix_hard_labels_and_teacher_probabilities() -> None:
    hard = np.array([[1, 0], [0, 1]], dtype=np.int8)
    teacher = np.array([[0.2, 0.4], [0.6, 0.9]])
    mixed = soft_labels(hard, teacher, 0.25)
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, [[0.8, 0.1], [0.15, 0.975]], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(soft_labels(hard, teacher, 0.0), hard.astype(np.float32))
    np.testing.assert_array_equal(soft_labels(hard, teacher, 1.0), teacher.astype(np.float32))
    with pytest.raises(ValueError, match="differ"):
        soft_labels(hard, teacher[:1], 0.5)


def test_cross_entropy_on_the_soft_label_is_the_mixed_loss() -> None:
    """Why the task losses stay one per task: BCE is linear in its target."""
    g = torch.Generator().manual_seed(0)
    z, q = torch.randn(64, generator=g), torch.rand(64, generator=g)
    y = (torch.rand(64, generator=g) < 0.3).float()
    a = 0.8
    soft = torch.from_numpy(soft_labels(y.numpy()[:, None], q.numpy()[:, None].astype(np.float64), a)[:, 0])
    mixed = (1 - a) * F.binary_cross_entropy_with_logits(z, y) + a * F.binary_cross_entropy_with_logits(z, q)
    torch.testing.assert_close(F.binary_cross_entropy_with_logits(z, soft), mixed, rtol=1e-6, atol=1e-6)


def test_folds_partition_the_rows_evenly_and_depend_on_the_seed_only() -> None:
    ids = fold_ids(1003, 5, seed=7)
    counts = np.bincount(ids, minlength=5)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(ids, fold_ids(1003, 5, seed=7))
    assert (ids != fold_ids(1003, 5, seed=8)).any()


def test_teacher_probabilities_are_out_of_fold(etl_dir: Path) -> None:
    """Each row's probability comes from boosters that did not see it: its AUC is well above chance
    and clearly below the in-sample AUC of a booster fit on every row with the same settings."""
    import lightgbm as lgb

    from aptrank.pipeline.baselines.lightgbm_baseline import booster_params, feature_matrix

    teacher = out_of_fold(etl_dir, DistillConfig(weight=1.0, folds=2, lightgbm=MEMORISING), seed=0)
    spec = FeatureSpec.read(etl_dir)
    train = split_frame(etl_dir, "train")
    assert teacher.probabilities.shape == (train.height, len(spec.task_names))
    assert ((teacher.probabilities > 0) & (teacher.probabilities < 1)).all()
    x = feature_matrix(train, spec)
    y = train["label_click"].to_numpy().astype(np.float64)
    rounds = max(teacher.rounds["click"])
    params = booster_params(MEMORISING, 0)
    data = lgb.Dataset(x.values, y, params=params, feature_name=x.names, categorical_feature=x.categorical)
    whole = lgb.train(params, data, num_boost_round=rounds)
    in_sample = auc(y, whole.predict(x.values))
    assert 0.6 < teacher.auc["click"] < in_sample - 0.05, (teacher.auc, in_sample)
    assert teacher.auc["click"] == pytest.approx(auc(y, teacher.probabilities[:, 0]))


def test_trainer_learns_from_the_soft_split_and_evaluates_on_hard_labels(etl_dir: Path, tmp_path: Path) -> None:
    from aptrank.pipeline.training import run_training

    overrides = [*TINY_DEMO, "train.max_steps_per_epoch=4", "train.distill.weight=0.5", "train.distill.folds=2"]
    overrides += ["train.distill.lightgbm.num_rounds=20", "train.distill.lightgbm.early_stopping_rounds=20"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", overrides)
    result = run_training(cfg, etl_dir, tmp_path / "run", progress=False)

    record = teacher_record(tmp_path / "run")
    assert record is not None and record["config"]["weight"] == 0.5 and record["rows"] == 56_140
    assert result.evaluation["distill"]["teacher_oof_auc"] == record["teacher_oof_auc"]
    soft_files = distilled_train_files(etl_dir, tmp_path / "run", cfg.train.distill, cfg.seed)
    hard = pl.concat([pl.read_parquet(f) for f in split_files(etl_dir, "train")])
    soft = pl.concat([pl.read_parquet(f) for f in soft_files])
    labels = [f"label_{t}" for t in FeatureSpec.read(etl_dir).task_names]
    assert soft.drop(labels).equals(hard.drop(labels))  # same rows, same order, same features
    for name in labels:
        assert soft[name].dtype == pl.Float32
        y, mixed = hard[name].to_numpy(), soft[name].to_numpy()
        teacher = (mixed - 0.5 * y) / 0.5
        assert ((teacher > 0) & (teacher < 1)).all()  # y' = y/2 + q/2 with q a probability
    # validation and test metrics are on the ETL's hard labels: the split files were not touched
    assert result.evaluation["valid"]["rows"] == split_frame(etl_dir, "valid").height


def test_distilled_split_is_reused_when_its_manifest_matches_and_remade_otherwise(
    etl_dir: Path, tmp_path: Path
) -> None:
    cfg = DistillConfig(weight=0.8, folds=2, lightgbm=LightGBMConfig(num_rounds=5, early_stopping_rounds=5))
    files = distilled_train_files(etl_dir, tmp_path, cfg, seed=3)
    manifest = tmp_path / "distill" / "rank-0" / "teacher.json"
    stamp = manifest.stat().st_mtime_ns
    first = pl.read_parquet(files[0])
    assert distilled_train_files(etl_dir, tmp_path, cfg, seed=3) == files
    assert manifest.stat().st_mtime_ns == stamp  # reused, not recomputed
    distilled_train_files(etl_dir, tmp_path, cfg.model_copy(update={"weight": 0.4}), seed=3)
    assert json.loads(manifest.read_text())["config"]["weight"] == 0.4
    assert not pl.read_parquet(files[0])["label_click"].equals(first["label_click"])
    # the same settings give the same soft labels, bit for bit
    distilled_train_files(etl_dir, tmp_path, cfg, seed=3)
    assert pl.read_parquet(files[0]).equals(first)
    # a manifest cut short (a kill or a full disk while it was written) is not trusted: remade
    manifest.write_text(manifest.read_text()[:40])
    assert distilled_train_files(etl_dir, tmp_path, cfg, seed=3) == files
    assert json.loads(manifest.read_text())["config"]["weight"] == 0.8
    assert pl.read_parquet(files[0]).equals(first)


def test_weight_zero_trains_on_the_features_own_files(etl_dir: Path, tmp_path: Path) -> None:
    assert distilled_train_files(etl_dir, tmp_path, DistillConfig(), seed=0) == split_files(etl_dir, "train")
    assert not (tmp_path / "distill").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.distill.weight=1.5", "train.distill.weight"), ("train.distill.folds=1", "train.distill.folds")],
)
def test_bad_distill_settings_are_refused_at_config_load(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_esmm_conditional_loss_with_soft_labels_is_refused_and_entire_space_esmm_is_not() -> None:
    """The conditional loss picks the rows whose parent label is 1: soft labels have none."""
    esmm = "tasks={finish: {given: click}}"
    with pytest.raises(ConfigError, match=r"tasks\.finish\.conditional_loss: .*train\.distill\.weight"):
        load_config(None, [esmm, "train.distill.weight=0.8"])
    entire_space = load_config(
        None, ["tasks={finish: {given: click, conditional_loss: false}}", "train.distill.weight=0.8"]
    )
    assert entire_space.train.distill.weight == 0.8
    assert load_config(None, [esmm]).tasks["finish"].conditional_loss  # hard labels: as before
