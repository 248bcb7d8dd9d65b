"""LightGBM baseline: one gradient-boosted tree model per task on the ETL's example files.

The honest non-neural row of the research table (issue #19). Trees: LightGBM (Ke et al., "LightGBM:
A Highly Efficient Gradient Boosting Decision Tree", NeurIPS 2017), binary log-loss objective, one
booster per task, early stopping on the ``valid`` split's log-loss.

Features, from exactly the arrays the neural models read (:func:`aptrank.data.tensors.model_inputs`
of the encoded example frame), so both evaluations see the same inputs as the rankers do:

* every ``categorical`` column (vocabulary or hash index) as a LightGBM *categorical* feature
  (Fisher's optimal-split grouping, LightGBM's ``categorical_feature``; optionally only those with
  at most ``max_categories`` ids);
* every ``dense`` column as is;
* each ``sequence`` (history) feature as its valid length: trees cannot use an id list directly, and
  the history's content is already summarised by the ETL's dense point-in-time counts and rates.

Two evaluations, as for the neural cells: :func:`evaluate_point_in_time` reads the split's example
files (each row's features as of its own ``ts``); :func:`evaluate_as_served` scores the split's raw
rows (:func:`aptrank.pipeline.scorer_model.raw_split_rows`) through the scorers' feature lookup
(:class:`aptrank.data.snapshot.FeatureLookup`) on the snapshot the neural served evaluation uses
(:func:`aptrank.pipeline.served_evaluation.snapshot_as_of_split`). Both use the project's metric code
(:func:`aptrank.pipeline.evaluate.evaluate_predictions`: AUC, GAUC, logloss, calibration).

Deterministic: ``deterministic=True``, ``force_row_wise=True``, a fixed thread count and every seed
(bagging, feature fraction, data sampling) set from the cell's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field, PositiveFloat, PositiveInt

from aptrank.config_model import ConfigModel
from aptrank.data.spec import FeatureSpec
from aptrank.data.tensors import model_inputs

LENGTH_SUFFIX = "_length"


class LightGBMConfig(ConfigModel):
    """Hyperparameters of the LightGBM baseline (shared by every task's booster)."""

    num_leaves: PositiveInt = 63
    learning_rate: PositiveFloat = 0.05
    num_rounds: PositiveInt = 1000
    """Upper bound on boosting rounds; early stopping picks the best on the valid split."""
    early_stopping_rounds: PositiveInt = 50
    min_data_in_leaf: PositiveInt = 100
    feature_fraction: float = Field(0.8, gt=0.0, le=1.0)
    lambda_l2: float = Field(1.0, ge=0.0)
    cat_smooth: float = Field(200.0, ge=0.0)
    """Smoothing of the per-category label statistics (LightGBM's ``cat_smooth``, default 10 there):
    tuned on the KuaiRand valid split, where 17k user and 5k item categories over 56k rows overfit
    with the library's default (mean valid AUC 0.746 at 10, 0.766 at 50, 0.778 at 200, 0.777 at 500)."""
    threads: PositiveInt = 1
    max_categories: PositiveInt | None = None
    """Categorical features with more ids than this enter as their vocabulary index, a plain number,
    instead of as categories (None: every categorical feature is a category; on KuaiRand 1000 scored
    0.758 mean valid AUC against 0.766 for all-categorical at the same smoothing)."""


@dataclass(frozen=True)
class FeatureMatrix:
    """Model inputs as one float matrix: categorical ids, dense values, history lengths."""

    values: np.ndarray  # float64 [N, F]
    names: list[str]
    categorical: list[int]  # column positions of the categorical features


def feature_matrix(frame: pl.DataFrame, spec: FeatureSpec, max_categories: int | None = None) -> FeatureMatrix:
    """The LightGBM matrix of an encoded frame (module docstring: which columns and why);
    categorical features with more than ``max_categories`` ids are numeric columns."""
    inputs = model_inputs(frame, spec)
    blocks = [inputs["categorical"], inputs["dense"], inputs["sequence_lengths"]]
    names = [
        *(f.name for f in spec.categorical),
        *(d.name for d in spec.dense),
        *(f"{s.name}{LENGTH_SUFFIX}" for s in spec.sequence),
    ]
    values = np.hstack([b.astype(np.float64).reshape(frame.height, -1) for b in blocks])
    categorical = [
        i for i, f in enumerate(spec.categorical) if max_categories is None or f.num_embeddings <= max_categories
    ]
    return FeatureMatrix(values, names, categorical)


def split_frame(features: Path, split: str) -> pl.DataFrame:
    """Every example row of ``split`` (file order)."""
    from aptrank.data.etl.run import example_files

    files = example_files(features, split)
    if not files:
        raise FileNotFoundError(f"{features}/{split}: no example files for split '{split}'")
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")


def booster_params(cfg: LightGBMConfig, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "binary_logloss",
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "lambda_l2": cfg.lambda_l2,
        "cat_smooth": cfg.cat_smooth,
        "num_threads": cfg.threads,
        "deterministic": True,
        "force_row_wise": True,
        "seed": seed,
        "verbosity": -1,
    }


@dataclass
class LightGBMModels:
    """One booster per task (the FeatureSpec's task order) and the rounds early stopping kept."""

    tasks: list[str]
    boosters: dict[str, Any]
    best_rounds: dict[str, int]
    seed: int

    def predict(self, matrix: FeatureMatrix) -> np.ndarray:
        """[N, K] probabilities in task order."""
        return np.column_stack(
            [self.boosters[t].predict(matrix.values, num_iteration=self.best_rounds[t]) for t in self.tasks]
        )

    def save(self, folder: Path) -> list[Path]:
        """Each booster as LightGBM's text model (``lightgbm_<task>.txt``)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"lightgbm_{t}.txt" for t in self.tasks]
        for t, p in zip(self.tasks, paths, strict=True):
            self.boosters[t].save_model(str(p), num_iteration=self.best_rounds[t])
        return paths


def train_lightgbm(features: Path, cfg: LightGBMConfig, seed: int) -> LightGBMModels:
    """One booster per task on ``features``' train split, early-stopped on its valid split."""
    import lightgbm as lgb

    spec = FeatureSpec.read(features)
    train, valid = split_frame(features, "train"), split_frame(features, "valid")
    x_train, x_valid = feature_matrix(train, spec, cfg.max_categories), feature_matrix(valid, spec, cfg.max_categories)
    boosters, rounds = {}, {}
    for task in spec.task_names:
        label = f"label_{task}"
        common = {"feature_name": x_train.names, "categorical_feature": x_train.categorical, "free_raw_data": False}
        d_train = lgb.Dataset(x_train.values, train[label].to_numpy().astype(np.float64), **common)
        d_valid = lgb.Dataset(x_valid.values, valid[label].to_numpy().astype(np.float64), reference=d_train, **common)
        booster = lgb.train(
            booster_params(cfg, seed),
            d_train,
            num_boost_round=cfg.num_rounds,
            valid_sets=[d_valid],
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        boosters[task], rounds[task] = booster, int(booster.best_iteration or booster.current_iteration())
    return LightGBMModels(list(spec.task_names), boosters, rounds, seed)


def _metrics(models: LightGBMModels, matrix: FeatureMatrix, labels: pl.DataFrame, users: np.ndarray) -> dict:
    from aptrank.pipeline.evaluate import evaluate_predictions

    probs = models.predict(matrix)
    truth = labels.select(f"label_{t}" for t in models.tasks).to_numpy()
    tasks = evaluate_predictions(models.tasks, list(range(len(models.tasks))), probs, truth, users)
    return {
        "rows": int(probs.shape[0]),
        "tasks": tasks,
        "mean_auc": float(np.nanmean([m["auc"] for m in tasks.values()])),
    }


def evaluate_point_in_time(models: LightGBMModels, features: Path, split: str = "test") -> dict[str, Any]:
    """Metrics on ``split``'s example files (point-in-time features), as the trainer reports them."""
    frame = split_frame(features, split)
    return _metrics(models, feature_matrix(frame, FeatureSpec.read(features)), frame, frame["user_id"].to_numpy())


def evaluate_as_served(models: LightGBMModels, snapshot: Path, rows: pl.DataFrame) -> dict[str, Any]:
    """Metrics on raw candidate ``rows`` (:func:`raw_split_rows`) encoded by the scorers' feature
    lookup from ``snapshot`` (an ETL output as :func:`snapshot_as_of_split` makes it)."""
    from aptrank.data.snapshot import FeatureLookup

    lookup = FeatureLookup(snapshot)
    encoded = lookup.build(rows).frame
    return _metrics(models, feature_matrix(encoded, lookup.spec), rows, rows["user_id"].to_numpy())
