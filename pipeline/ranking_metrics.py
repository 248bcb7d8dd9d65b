"""Ranking metrics for multi-task evaluation: AUC, GAUC, logloss, calibration, Δm%.

* AUC: the Mann–Whitney statistic with average ranks for ties (equals the area under the ROC curve).
* GAUC (Zhou et al., "Deep Interest Network", KDD 2018): the impression-weighted mean of per-user
  AUC over users that have both classes.
* Δm% (Maninis et al., CVPR 2019; the MTL survey convention used by LibMTL):
  (1/K) Σ_k (−1)^{δ_k} (M_{m,k} − M_{b,k}) / M_{b,k} × 100, δ_k = 1 when lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels``; NaN when only one class is present."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pl.Series(s).rank("average").to_numpy()
    return float((ranks[y > 0.5].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups with both classes (NaN if none)."""
    frame = pl.DataFrame({"g": groups, "y": np.asarray(labels, dtype=np.float64), "s": scores})
    per_group = (
        frame.with_columns(r=pl.col("s").rank("average").over("g"))
        .group_by("g", maintain_order=True)
        .agg(n=pl.len(), pos=pl.col("y").sum(), rpos=(pl.col("r") * pl.col("y")).sum())
        .with_columns(neg=pl.col("n") - pl.col("pos"))
        .filter((pl.col("pos") > 0) & (pl.col("neg") > 0))
        .with_columns(a=(pl.col("rpos") - pl.col("pos") * (pl.col("pos") + 1) / 2) / (pl.col("pos") * pl.col("neg")))
    )
    if per_group.height == 0:
        return float("nan")
    return float((per_group["a"] * per_group["n"]).sum() / per_group["n"].sum())


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [EPS, 1 − EPS]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction / label rate (1.0 is calibrated on average; NaN without positives)."""
    rate = float(np.mean(labels))
    return float(np.mean(probs)) / rate if rate > 0 else float("nan")


def task_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """All per-task metrics for one task's column."""
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(labels, probs, users),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "label_rate": float(np.mean(labels)),
    }


LOWER_IS_BETTER = {"logloss": True, "auc": False, "gauc": False}


def delta_m(
    model: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("auc",),
) -> float:
    """Δm% of ``model`` (task -> metric -> value) against single-task ``baselines`` (same shape),
    averaged over every (task, metric) pair present in both; NaN when none is."""
    terms: list[float] = []
    for task, base in baselines.items():
        if task not in model:
            continue
        for m in metrics:
            mb, mm = base.get(m), model[task].get(m)
            if mb is None or mm is None or not math.isfinite(mb) or not math.isfinite(mm) or mb == 0:
                continue
            sign = -1.0 if LOWER_IS_BETTER.get(m, False) else 1.0
            terms.append(sign * (mm - mb) / mb * 100.0)
    return float(np.mean(terms)) if terms else float("nan")
