"""Assemble the FeatureSpec the ETL writes (``DIR/feature_spec.json``) from the plan, the train-split
vocabularies/priors/statistics and the snapshot layout."""

from __future__ import annotations

from typing import Any

from aptrank.data.encodings import Encoding, ItemHistory, Recipe
from aptrank.data.etl.config import EtlConfig
from aptrank.data.etl.features import FeaturePlan
from aptrank.data.spec import CategoricalFeature, DenseFeature, FeatureSpec, SequenceFeature

ITEM_FEATURE = "item"


def build_spec(
    cfg: EtlConfig,
    plan: FeaturePlan,
    encodings: dict[str, Encoding],
    recipes: dict[str, Recipe],
    stats: dict[str, tuple[float, float]],
    extras: dict[str, Any],
) -> FeatureSpec:
    """``encodings``: categorical feature -> resolved encoding; ``recipes`` with priors filled in;
    ``stats``: dense feature -> (mean, std) on train; ``extras`` merged into the spec's extras."""
    categorical = tuple(
        CategoricalFeature(c.name, c.table, encodings[c.name].num_embeddings(), encodings[c.name])
        for c in plan.categorical
    )
    item_rows = encodings[ITEM_FEATURE].num_embeddings()
    sequence = tuple(
        SequenceFeature(
            h.name,
            ITEM_FEATURE,
            item_rows,
            h.max_len,
            ItemHistory(h.name, h.task, ITEM_FEATURE),
        )
        for h in cfg.features.history
    )
    dense = tuple(DenseFeature(name, stats[name][0], stats[name][1], 0.0, recipe) for name, recipe in recipes.items())
    return FeatureSpec(
        tasks=cfg.tasks,
        categorical=categorical,
        sequence=sequence,
        dense=dense,
        extras={
            "time_zone": cfg.time_zone,
            "derived": plan.derived,
            "windows": list(cfg.features.windows),
            "smoothing": cfg.features.smoothing,
            **extras,
        },
    )
