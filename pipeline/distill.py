"""Soft labels from a gradient-boosted tree teacher: the ranker learns what LightGBM knows, and serves alone.

On the shipped KuaiRand sample (56k training rows, id-heavy features) one LightGBM model per task is
as good as the multi-task networks as served, and their errors differ: the average of the two scores
beats both (docs/results.md, issue #19). Serving that average would put three tree ensembles into
the exported graph and every scorer. Distillation keeps the blend's knowledge and drops its cost:
the network trains on ``y' = (1 - a) y + a q``, where ``q`` is the teacher's probability for the
row and ``a`` is ``train.distill.weight`` (Hinton, Vinyals and Dean, "Distilling the Knowledge in a
Neural Network", 2015, with the hard and soft targets mixed; a tree teacher for a network student
as in Ke et al., "DeepGBM", KDD 2019). Binary cross-entropy is linear in its target, so each task's
loss is ``(1 - a) BCE(y) + a BCE(q)``: still one loss per task, and every ``apt`` method, ESMM's
entire-space losses and the exported graph are unchanged.

The teacher's ``q`` for a training row comes from a booster that never saw that row (``folds``-fold
cross-fitting, rows assigned to folds by a seeded draw): in-sample probabilities of 63-leaf trees
on 17k-category features are close to the labels themselves and would teach nothing. Each fold's
boosters are those of :mod:`aptrank.pipeline.baselines.lightgbm_baseline`, early-stopped on the
``valid`` split; validation and test metrics keep the hard labels.

:func:`distilled_train_files` writes the training split with the soft labels (float32
``label_<task>``, every other column as it was, the same files and row order) under
``<run_dir>/distill/`` with a manifest (``teacher.json``: weight, folds, seed, FeatureSpec hash,
the teacher's out-of-fold AUC per task and its rounds). A resumed run whose manifest matches reuses
them; anything else recomputes (deterministic: LightGBM's ``deterministic`` mode, fixed threads).
Under ``torchrun`` every rank computes the same files in its own folder (``distill/rank-<r>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import Field

from aptrank.config_model import ConfigModel
from aptrank.pipeline.baselines.lightgbm_baseline import LightGBMConfig

DISTILL_DIR = "distill"
MANIFEST = "teacher.json"


class DistillConfig(ConfigModel):
    """``train.distill``: soft labels from a LightGBM teacher (:mod:`aptrank.pipeline.distill`)."""

    weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="a in y' = (1 - a) y + a q, q the teacher's out-of-fold probability; 0 = off (hard labels)",
    )
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds of the teacher over the training split")
    lightgbm: LightGBMConfig = Field(
        default_factory=LightGBMConfig, description="the teacher's boosters (the LightGBM baseline's settings)"
    )


def soft_labels(hard: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * hard + weight * teacher`` as float32 (both [N, K], teacher in [0, 1])."""
    if hard.shape != teacher.shape:
        raise ValueError(f"soft_labels: labels {hard.shape} and teacher probabilities {teacher.shape} differ")
    return ((1.0 - weight) * hard.astype(np.float64) + weight * teacher).astype(np.float32)


def fold_ids(rows: int, folds: int, seed: int) -> np.ndarray:
    """[rows] fold of each row, a seeded uniform draw (every fold non-empty when rows >= folds)."""
    order = np.random.default_rng(seed).permutation(rows)
    ids = np.empty(rows, dtype=np.int64)
    ids[order] = np.arange(rows) % folds
    return ids


@dataclass(frozen=True)
class Teacher:
    """Out-of-fold probabilities [N, K] of the training split (file order) and what made them."""

    probabilities: np.ndarray
    auc: dict[str, float]
    rounds: dict[str, list[int]]


def out_of_fold(
    features: Path, cfg: DistillConfig, seed: int, progress: bool = False, train_files: list[Path] | None = None
) -> Teacher:
    """Each training row's probability from the boosters of the folds that left it out, rows in the
    order of ``train_files`` (default: the training split's files as the trainer lists them); a
    progress bar over the tasks x folds boosters when ``progress``."""
    import lightgbm as lgb
    from tqdm import tqdm

    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.baselines.lightgbm_baseline import booster_params, feature_matrix, split_frame
    from aptrank.pipeline.ranking_metrics import auc

    spec = FeatureSpec.read(features)
    from aptrank.pipeline.loader import split_files

    files = train_files if train_files is not None else split_files(features, "train")
    train = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    valid = split_frame(features, "valid")
    params = cfg.lightgbm
    x_train = feature_matrix(train, spec, params.max_categories)
    x_valid = feature_matrix(valid, spec, params.max_categories)
    folds = fold_ids(train.height, cfg.folds, seed)
    common = {"feature_name": x_train.names, "categorical_feature": x_train.categorical, "free_raw_data": False}
    tasks = list(spec.task_names)
    probs = np.zeros((train.height, len(tasks)))
    scores: dict[str, float] = {}
    rounds: dict[str, list[int]] = {t: [] for t in tasks}
    bar = tqdm(total=len(tasks) * cfg.folds, desc="distill teacher", unit="booster", disable=not progress)
    labels = {t: (_label(train, t), _label(valid, t)) for t in tasks}  # (train, valid) per task
    for fold in range(cfg.folds):  # one binned dataset per fold, its labels swapped per task
        fit, held = folds != fold, folds == fold
        booster_cfg = booster_params(params, seed + fold)
        d_fit = lgb.Dataset(x_train.values[fit], labels[tasks[0]][0][fit], params=booster_cfg, **common).construct()
        d_valid = lgb.Dataset(x_valid.values, labels[tasks[0]][1], reference=d_fit, **common).construct()
        for k, task in enumerate(tasks):
            d_fit.set_label(labels[task][0][fit])
            d_valid.set_label(labels[task][1])
            booster = lgb.train(
                booster_cfg,
                d_fit,
                num_boost_round=params.num_rounds,
                valid_sets=[d_valid],
                callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
            )
            best = int(booster.best_iteration or booster.current_iteration())
            probs[held, k] = booster.predict(x_train.values[held], num_iteration=best)
            rounds[task].append(best)
            bar.update()
    for k, task in enumerate(tasks):
        scores[task] = float(auc(labels[task][0], probs[:, k]))
    bar.close()
    return Teacher(probs, scores, rounds)


def _label(frame: pl.DataFrame, task: str) -> np.ndarray:
    return frame[f"label_{task}"].to_numpy().astype(np.float64)


def _manifest_key(features: Path, cfg: DistillConfig, seed: int) -> dict[str, Any]:
    from aptrank.data.spec import FeatureSpec

    return {"config": cfg.model_dump(mode="json"), "seed": seed, "spec_hash": FeatureSpec.read(features).hash}


def _matches(manifest: Path, key: dict[str, Any]) -> bool:
    """Whether a manifest was written for ``key`` (an unreadable one, e.g. cut short by a full disk,
    does not match: the files are remade)."""
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {k: record.get(k) for k in key} == key


def distilled_train_files(
    features: Path, run_dir: Path, cfg: DistillConfig, seed: int, rank: int = 0, progress: bool = False
) -> list[Path]:
    """The training split's files with soft labels (module docstring), made or reused; ``features``'
    own files when ``cfg.weight`` is 0."""
    from aptrank.data.spec import FeatureSpec
    from aptrank.pipeline.loader import split_files

    source = split_files(features, "train")
    if cfg.weight == 0.0:
        return source
    out = run_dir / DISTILL_DIR / f"rank-{rank}"
    key = _manifest_key(features, cfg, seed)
    manifest = out / MANIFEST
    targets = [out / "train" / f.relative_to(features / "train") for f in source]
    if manifest.is_file() and all(t.is_file() for t in targets) and _matches(manifest, key):
        return targets
    manifest.unlink(missing_ok=True)
    teacher = out_of_fold(features, cfg, seed, progress, source)  # rows in the order written below
    tasks = FeatureSpec.read(features).task_names
    start = 0
    for src, dst in zip(source, targets, strict=True):
        frame = pl.read_parquet(src)
        rows = slice(start, start + frame.height)
        hard = frame.select(f"label_{t}" for t in tasks).to_numpy()
        soft = soft_labels(hard, teacher.probabilities[rows], cfg.weight)
        frame = frame.with_columns(pl.Series(f"label_{t}", soft[:, k]) for k, t in enumerate(tasks))
        dst.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frame.to_arrow(), dst.with_suffix(".tmp"))
        dst.with_suffix(".tmp").replace(dst)
        start += frame.height
    record = {**key, "teacher_oof_auc": teacher.auc, "teacher_rounds": teacher.rounds, "rows": start}
    staged = manifest.with_suffix(".tmp")
    staged.write_text(json.dumps(record, indent=2, sort_keys=True))
    staged.replace(manifest)  # last, and whole: it marks the files complete
    return targets


def teacher_record(run_dir: Path, rank: int = 0) -> dict[str, Any] | None:
    """The manifest of a run's distilled split (None: the run trained on hard labels)."""
    path = run_dir / DISTILL_DIR / f"rank-{rank}" / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
