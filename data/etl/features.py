"""The feature plan: which model features an ETL config produces, from which raw columns.

This is the only place that turns a config into a feature list; the FeatureSpec written by the ETL
(with vocabularies and statistics filled in) is then the only place consumers read it from.

Categorical: ``user``, ``item``, ``author`` (the ids of :data:`~data.etl.config.ENTITY_KEYS`, each
its own embedding table; ``item`` is shared with the history sequences),
context columns, categorical side attributes, ``hour``/``weekday`` of the impression in the
configured time zone, ``duration_bucket`` of the item. Sequence: one per configured history (table
``item``). Dense: per entity x window ``<entity>_<window>_count`` (log1p) and
``<entity>_<window>_<task>_rate`` (smoothed), ``item_age_days`` (log1p), dense side attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aptrank.data.encodings import (
    HOUR,
    ITEM_AGE,
    WEEKDAY,
    Buckets,
    Encoding,
    Log1pCount,
    Range,
    Recipe,
    SmoothedRate,
    Value,
)
from aptrank.data.etl.config import ENTITY_KEYS, EncodingConfig, EtlConfig
from aptrank.data.etl.labels import ITEM_DURATION
from aptrank.data.etl.pit import count_column, positive_column

ITEM_TABLE_RENAMES: dict[str, str] = {"duration_ms": ITEM_DURATION, "upload_ts": "item_upload_ts"}
"""Item-table columns renamed in raw frames (events may carry their own ``duration_ms``)."""


@dataclass(frozen=True)
class CategoricalPlan:
    name: str
    table: str
    source: str
    encoding: EncodingConfig | Encoding
    """Config (vocab/hash, resolved on train data) or a fixed encoding (range, buckets)."""


@dataclass
class FeaturePlan:
    categorical: list[CategoricalPlan] = field(default_factory=list)
    dense: dict[str, Recipe] = field(default_factory=dict)
    """Recipes; smoothed rates carry prior 0.0 until the train rates are known."""
    derived: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    user_columns: list[str] = field(default_factory=list)
    item_columns: list[str] = field(default_factory=list)

    def with_priors(self, priors: dict[str, float]) -> dict[str, Recipe]:
        """Dense recipes with each smoothed rate's prior set to its task's train rate."""
        return {name: r.with_priors(priors) for name, r in self.dense.items()}


def item_column(name: str) -> str:
    """Name of an item-table column in raw frames."""
    return ITEM_TABLE_RENAMES.get(name, name)


def plan_features(cfg: EtlConfig, has_items: bool, has_upload_ts: bool) -> FeaturePlan:
    f = cfg.features
    plan = FeaturePlan()
    plan.entities = [e for e in f.entities if e != "author" or has_items]
    ids = ["user", "item", *(["author"] if has_items else [])]
    for name in ids:
        plan.categorical.append(CategoricalPlan(name, name, ENTITY_KEYS[name], _enc(cfg, name)))
    plain = [*f.context, *f.item_attributes.categorical, *f.user_attributes.categorical]
    for col in plain:
        src = item_column(col) if col in f.item_attributes.categorical else col
        plan.categorical.append(CategoricalPlan(col, col, src, _enc(cfg, col)))
    plan.categorical += [
        CategoricalPlan(HOUR, HOUR, HOUR, Range(HOUR, low=0, high=23)),
        CategoricalPlan(WEEKDAY, WEEKDAY, WEEKDAY, Range(WEEKDAY, low=1, high=7)),
    ]
    plan.derived = [HOUR, WEEKDAY]
    if has_items:
        enc = Buckets(ITEM_DURATION, tuple(round(s * 1000) for s in f.duration_buckets_s))
        plan.categorical.append(CategoricalPlan("duration_bucket", "duration_bucket", ITEM_DURATION, enc))

    tasks = cfg.task_names
    for e in plan.entities:
        for w in f.windows:
            plan.dense[f"{e}_{w}_count"] = Log1pCount(count_column(e, w))
            for t in tasks:
                rate = SmoothedRate(positive_column(e, w, t), count_column(e, w), 0.0, f.smoothing, task=t)
                plan.dense[f"{e}_{w}_{t}_rate"] = rate
    if has_items and has_upload_ts and f.item_age:
        plan.dense[ITEM_AGE] = Value(ITEM_AGE, log1p=True)
        plan.derived.append(ITEM_AGE)
    for attrs, rename in ((f.item_attributes, item_column), (f.user_attributes, str)):
        for col in attrs.dense:
            plan.dense[col] = Value(rename(col), log1p=col in attrs.log1p)
    plan.user_columns = [*f.user_attributes.categorical, *f.user_attributes.dense]
    plan.item_columns = [*f.item_attributes.categorical, *f.item_attributes.dense]
    return plan


def _enc(cfg: EtlConfig, name: str) -> EncodingConfig:
    return cfg.features.encodings.get(name, EncodingConfig())


__all__ = ["CategoricalPlan", "FeaturePlan", "item_column", "plan_features"]
