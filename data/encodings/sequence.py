"""Sequence encodings: a list of embedding rows per example.

* :class:`ItemHistory` (``item_history``): the user's recent items with a positive label of a task,
  as rows of the item table, encoded and cut to ``max_len`` by the ETL (:mod:`data.etl.history`)
  and kept in the snapshot. It is never computed per request, so it has no numpy function of its
  own: :func:`data.tensors.model_inputs` pads the lists for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from aptrank.data.encodings.base import Registry, Serialisable


@dataclass(frozen=True)
class ItemHistory(Serialisable):
    """The user's recent items with a positive ``task`` label, as rows of the ``ids`` feature's table
    (padded for the model by :func:`data.tensors.model_inputs`)."""

    kind: ClassVar[str] = "item_history"
    source: str
    task: str
    ids: str

    def polars_expr(self, value: pl.Expr, index_dtype: pl.DataType) -> pl.Expr:
        """The list column as lists of ``index_dtype`` (null -> empty list)."""
        ids = pl.List(index_dtype)
        return value.cast(ids).fill_null(pl.lit([], dtype=ids))


SEQUENCE: Registry[ItemHistory] = Registry("sequence encoding", ItemHistory)

__all__ = ["SEQUENCE", "ItemHistory"]
