"""Assemble the FeatureSpec the ETL writes (``DIR/feature_spec.json``) from the plan, the train-split
vocabularies/priors/statistics and the snapshot layout."""

from __future__ import annotations

from typing import Any

from aptrank.data.etl.config import EtlConfig
from aptrank.data.etl.dense import Recipe
from aptrank.data.etl.encoding import num_embeddings
from aptrank.data.etl.features import FeaturePlan
from aptrank.data.spec import CategoricalFeature, DenseFeature, FeatureSpec, SequenceFeature

ITEM_FEATURE = "item"


def build_spec(
    cfg: EtlConfig,
    plan: FeaturePlan,
    encodings: dict[str, dict[str, Any]],
    recipes: dict[str, Recipe],
    stats: dict[str, tuple[float, float]],
    extras: dict[str, Any],
) -> FeatureSpec:
    """``encodings``: categorical feature -> resolved encoding; ``recipes`` with priors filled in;
    ``stats``: dense feature -> (mean, std) on train; ``extras`` merged into the spec's extras."""
    categorical = tuple(
        CategoricalFeature(c.name, c.table, num_embeddings(encodings[c.name]), encodings[c.name])
        for c in plan.categorical
    )
    item_rows = num_embeddings(encodings[ITEM_FEATURE])
    sequence = tuple(
        SequenceFeature(
            h.name,
            ITEM_FEATURE,
            item_rows,
            h.max_len,
            {"kind": "item_history", "source": h.name, "task": h.task, "ids": ITEM_FEATURE},
        )
        for h in cfg.features.history
    )
    dense = tuple(DenseFeature(name, stats[name][0], stats[name][1], 0.0) for name in recipes)
    return FeatureSpec(
        tasks=cfg.tasks,
        categorical=categorical,
        sequence=sequence,
        dense=dense,
        extras={
            "time_zone": cfg.time_zone,
            "derived": plan.derived,
            "dense_recipes": recipes,
            "windows": list(cfg.features.windows),
            "smoothing": cfg.features.smoothing,
            **extras,
        },
    )
