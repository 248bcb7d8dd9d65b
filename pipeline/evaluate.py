"""Evaluation of a trained ranker on a split, and the per-item popularity baseline.

Per task: AUC, GAUC (per user, impression-weighted), logloss, calibration (mean prediction / label
rate). The popularity baseline scores each example by its item's smoothed positive rate on the
*train* split (global rate for unseen items), evaluated with the same metrics in the same pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from aptrank.data.spec import FeatureSpec
from aptrank.pipeline.loader import ExampleLoader, split_files
from aptrank.pipeline.ranking_metrics import task_metrics

POPULARITY_PRIOR = 20.0  # pseudo-impressions at the global rate (additive smoothing)


@torch.no_grad()
def predict(
    model: torch.nn.Module, loader: ExampleLoader, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities [N, K_model], labels [N, K_spec], user ids [N], item ids [N]) in file order."""
    was_training = model.training
    model.eval()
    probs, labels, users, items = [], [], [], []
    for batch, u, i in loader.ordered_batches():
        logits = model(batch.to(device))
        probs.append(torch.sigmoid(logits).float().cpu().numpy())
        labels.append(batch.labels.numpy())
        users.append(u)
        items.append(i)
    model.train(was_training)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(users), np.concatenate(items)


def evaluate_predictions(
    task_names: list[str], label_columns: list[int], probs: np.ndarray, labels: np.ndarray, users: np.ndarray
) -> dict[str, dict[str, float]]:
    return {
        task: task_metrics(labels[:, col], probs[:, k], users)
        for k, (task, col) in enumerate(zip(task_names, label_columns, strict=True))
    }


def popularity_scores(features_dir: str | Path, spec: FeatureSpec, items: np.ndarray) -> np.ndarray:
    """[N, K] smoothed per-item positive rates from the train split, for ``items``."""
    label_cols = [f"label_{t}" for t in spec.task_names]
    train = pl.scan_parquet([str(f) for f in split_files(features_dir, "train")]).select("item_id", *label_cols)
    global_rates = train.select(pl.col(label_cols).cast(pl.Float64).mean()).collect().row(0)
    per_item = train.group_by("item_id").agg(
        pl.len().alias("n"), *[pl.col(c).cast(pl.Float64).sum() for c in label_cols]
    )
    smoothed = per_item.select(
        "item_id",
        *[
            ((pl.col(c) + POPULARITY_PRIOR * g) / (pl.col("n") + POPULARITY_PRIOR)).alias(c)
            for c, g in zip(label_cols, global_rates, strict=True)
        ],
    ).collect()
    frame = pl.DataFrame({"item_id": items}).join(smoothed, on="item_id", how="left", maintain_order="left")
    filled = frame.with_columns([pl.col(c).fill_null(g) for c, g in zip(label_cols, global_rates, strict=True)])
    return filled.select(label_cols).to_numpy().astype(np.float64)


def evaluate_split(
    model: Any,
    spec: FeatureSpec,
    features_dir: str | Path,
    split: str,
    device: torch.device,
    batch_size: int,
    with_popularity: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``split`` (and of the popularity baseline when asked)."""
    loader = ExampleLoader(spec, split_files(features_dir, split), batch_size, shuffle_buffer=batch_size * 8)
    probs, labels, users, items = predict(model, loader, device)
    out: dict[str, Any] = {
        "rows": int(probs.shape[0]),
        "tasks": evaluate_predictions(model.task_names, model.label_columns, probs, labels, users),
    }
    out["mean_auc"] = float(np.nanmean([m["auc"] for m in out["tasks"].values()]))
    if with_popularity:
        pop = popularity_scores(features_dir, spec, items)
        cols = list(range(spec.num_tasks))
        out["popularity"] = evaluate_predictions(spec.task_names, cols, pop, labels, users)
    return out
