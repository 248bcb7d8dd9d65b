"""Feature snapshot (``DIR/snapshot/``) and the scorers' torch-free feature lookup.

The ETL writes one table per entity as of the data's end (cutoff = last accepted event + 1 ms; with
``freshness: daily`` the end of that event's day, :func:`data.etl.freshness.snapshot_cutoff`),
produced by the same point-in-time code as the examples (:mod:`data.etl.pit`,
:mod:`data.etl.history`):

* ``users.parquet``   ``user_id``, user point-in-time counts, history lists (encoded), user attributes;
* ``items.parquet``   ``item_id``, ``author_id``, item duration and upload time, item attributes,
                      item point-in-time counts;
* ``authors.parquet`` ``author_id``, author point-in-time counts.

:class:`FeatureLookup` turns candidate rows (``user_id``, ``item_id``, ``ts``, context columns)
into exactly the encoded feature columns of the FeatureSpec by joining these tables and calling the
ETL's own :class:`data.etl.feature_encoder.FeatureEncoder`. Unseen ids encode to the OOV row 0; candidates
whose user/item/author has no snapshot row get the defaults an entity without history has in the
examples (counts 0, rates = prior, empty history, null attributes -> OOV/fill). Both are counted.
Window counts (e.g. last 1 day) are as of the cutoff, not of the candidate's ts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from aptrank.data.etl.feature_encoder import FeatureEncoder
from aptrank.data.schema import TS_DTYPE
from aptrank.data.spec import OOV_INDEX, FeatureSpec, SpecError


@dataclass
class LookupResult:
    """Encoded feature frame (candidate order) and what had to be defaulted."""

    frame: pl.DataFrame
    rows: int
    missing_rows: dict[str, int] = field(default_factory=dict)
    """Per entity: candidates without a snapshot row (defaults used)."""
    oov: dict[str, int] = field(default_factory=dict)
    """Per categorical feature: candidates encoded to the OOV row (unseen or null value)."""


class FeatureLookup:
    """Snapshot tables + encoder of one ETL output, loaded once (batch and online scorers)."""

    def __init__(self, etl_dir: str | Path, spec: FeatureSpec | None = None) -> None:
        base = Path(etl_dir)
        self.spec = spec or FeatureSpec.read(base)
        self.encoder = FeatureEncoder(self.spec, base)
        try:
            snap = self.spec.extras["snapshot"]
            self.context: list[str] = list(self.spec.extras.get("context", []))
        except KeyError as e:
            raise SpecError("FeatureSpec has no snapshot layout: not written by aptrank etl") from e
        self.tables: dict[str, tuple[dict[str, Any], pl.DataFrame]] = {}
        for entity, meta in snap["tables"].items():
            path = base / meta["file"]
            if not path.is_file():
                raise SpecError(f"{path}: snapshot table named by the FeatureSpec is missing")
            cols = [meta["key"], *meta["counts"], *meta["columns"]]
            self.tables[entity] = (meta, pl.read_parquet(path, columns=cols))

    def build(self, candidates: pl.DataFrame | pl.LazyFrame) -> LookupResult:
        """Encoded features for ``candidates`` (needs ``user_id``, ``item_id``, ``ts`` and the
        spec's context columns; ``ts`` as a datetime or epoch milliseconds)."""
        lf = candidates.lazy()
        have = lf.collect_schema()
        missing = [c for c in ("user_id", "item_id", "ts", *self.context) if c not in have]
        if missing:
            raise SpecError(f"candidates lack required columns {missing} (have {list(have)})")
        ts = pl.col("ts")
        ts = ts.cast(pl.Int64).cast(TS_DTYPE) if have["ts"].is_integer() else ts.dt.convert_time_zone("UTC")
        raw = lf.select("user_id", "item_id", ts.dt.cast_time_unit("ms").alias("ts"), *self.context)
        flags = []
        for entity in ("user", "item", "author"):
            if entity not in self.tables:
                continue
            meta, table = self.tables[entity]
            key, flag = meta["key"], f"_has_{entity}"
            right = table.lazy().with_columns(pl.lit(True).alias(flag))
            raw = raw.with_columns(pl.col(key).cast(table.schema[key], strict=False)).join(
                right, on=key, how="left", maintain_order="left"
            )
            raw = raw.with_columns(pl.col(c).fill_null(0) for c in meta["counts"])
            flags.append((entity, flag))
        out = raw.with_columns(pl.col(f).is_null().alias(f) for _, f in flags)
        frame = self.encoder.encode(out, with_labels=False, passthrough=[f for _, f in flags]).collect()
        missing_rows = {e: int(frame[f].sum()) for e, f in flags}
        oov = {f.name: int((frame[f.name] == OOV_INDEX).sum()) for f in self.spec.categorical}
        return LookupResult(frame.drop(f for _, f in flags), frame.height, missing_rows, oov)


def lookup_features(candidates: pl.DataFrame | pl.LazyFrame, etl_dir: str | Path) -> LookupResult:
    """One-shot :meth:`FeatureLookup.build` (load the snapshot, encode ``candidates``)."""
    return FeatureLookup(etl_dir).build(candidates)
