"""Feature encodings, each kind defined once: categorical encodings (:mod:`.categorical`), sequence
encodings (:mod:`.sequence`), dense recipes (:mod:`.dense`) and derived columns (:mod:`.derived`).

Every kind is a typed class with a Polars expression (the ETL's examples and the scorers' feature
lookup, :class:`data.etl.feature_encoder.FeatureEncoder`) and a vectorised numpy function (the
online scorer's request-time features), equal on every input. The FeatureSpec holds these objects;
its JSON names each kind, and the registries here are the only readers of those names.
"""

from aptrank.data.encodings.base import OOV_INDEX, Column, NotVectorised, SpecError, dtype_from_name, dtype_name
from aptrank.data.encodings.categorical import CATEGORICAL, Buckets, Encoding, Hashed, Range, Vocab
from aptrank.data.encodings.dense import RECIPES, Log1pCount, Recipe, SmoothedRate, Value
from aptrank.data.encodings.derived import DAY_MS, HOUR, ITEM_AGE, ITEM_UPLOAD, WEEKDAY, Derived, derived_columns
from aptrank.data.encodings.sequence import SEQUENCE, ItemHistory

__all__ = [
    "CATEGORICAL",
    "DAY_MS",
    "HOUR",
    "ITEM_AGE",
    "ITEM_UPLOAD",
    "OOV_INDEX",
    "RECIPES",
    "SEQUENCE",
    "WEEKDAY",
    "Buckets",
    "Column",
    "Derived",
    "Encoding",
    "Hashed",
    "ItemHistory",
    "Log1pCount",
    "NotVectorised",
    "Range",
    "Recipe",
    "SmoothedRate",
    "SpecError",
    "Value",
    "Vocab",
    "derived_columns",
    "dtype_from_name",
    "dtype_name",
]
