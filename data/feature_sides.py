"""Which side of a request each model feature depends on: the user's snapshot row, the item's, or the
request itself (torch-free; the export and the scorers share it).

A feature's raw inputs are read from the FeatureSpec's typed encodings (categorical and sequence
``encoding.source``, the dense recipes' ``columns``, the derived columns) and matched against the
snapshot tables' columns: all inputs in the user table -> ``user``; all in the item or author
tables -> ``item``; anything reading ``ts``, a context column or a derived column -> ``request``.
Factorising a computation over the parts of its input that vary independently is the classic
common-subexpression idea; in recommender serving it is user-side / item-side feature caching. The
feature lookup precomputes each side's columns (``serving.factorize``) and the export computes the
user side's part of the first layer apart (``models.export.fold``), so that a scorer can compute it
once per user (``serving.user_precompute``).
"""

from __future__ import annotations

from collections.abc import Iterable

from aptrank.data.spec import FeatureSpec

USER, ITEM, REQUEST = "user", "item", "request"
SIDE_ENTITIES: dict[str, tuple[str, ...]] = {USER: ("user",), ITEM: ("item", "author")}


def snapshot_columns(spec: FeatureSpec, side: str) -> set[str]:
    """The snapshot columns (keys included) of the tables of ``side``."""
    tables = spec.extras["snapshot"]["tables"]
    out: set[str] = set()
    for e in SIDE_ENTITIES[side]:
        if e in tables:
            out |= {tables[e]["key"], *tables[e]["counts"], *tables[e]["columns"]}
    return out


def feature_sides(spec: FeatureSpec, derived: Iterable[str], context: Iterable[str]) -> dict[str, str]:
    """Feature name -> ``user`` | ``item`` | ``request`` (``derived``: the spec's derived column
    names, ``context``: its context columns)."""
    user, item = snapshot_columns(spec, USER), snapshot_columns(spec, ITEM)
    per_request = {*derived, *context, "ts"}
    inputs = {f.name: {f.encoding.source} for f in (*spec.categorical, *spec.sequence)}  # type: ignore[union-attr]
    inputs |= {d.name: set(d.recipe.columns) for d in spec.dense}  # type: ignore[union-attr]
    sides = {}
    for name, cols in inputs.items():
        if cols & per_request or (cols <= user and cols <= item):
            sides[name] = REQUEST
        else:
            sides[name] = USER if cols <= user else ITEM if cols <= item else REQUEST
    return sides


def spec_sides(spec: FeatureSpec) -> dict[str, str] | None:
    """:func:`feature_sides` from the spec alone (its ``derived`` and ``context`` extras), or None for
    a spec the ETL did not write (no snapshot layout, a feature without encoding or recipe)."""
    features = (*spec.categorical, *spec.sequence)
    if "snapshot" not in spec.extras or any(f.encoding is None for f in features):
        return None
    if any(d.recipe is None for d in spec.dense):
        return None
    return feature_sides(spec, spec.extras.get("derived", []), spec.extras.get("context", []))
