"""Canonical raw schema (DESIGN.md contract 1): one Polars schema per table.

Every source adapter maps its files onto these tables; nothing downstream reads raw source columns.
Identifier columns may be int64 or string (a source picks one per column); all other required
columns have one exact dtype. Extra columns are allowed and kept: on events they are *context*
columns (e.g. KuaiRand's ``tab``), on users and items they are side attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

TS_DTYPE = pl.Datetime("ms", "UTC")
ID_DTYPES: tuple[pl.DataType, ...] = (pl.Int64(), pl.String())


@dataclass(frozen=True)
class Column:
    """One required column: its name, the dtypes it may have and whether nulls are allowed."""

    name: str
    dtypes: tuple[pl.DataType, ...]
    nullable: bool = False

    @property
    def expected(self) -> str:
        return " or ".join(str(d) for d in self.dtypes)


@dataclass(frozen=True)
class TableSchema:
    """The required columns of one canonical table."""

    table: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


EVENTS = TableSchema(
    "events",
    (
        Column("user_id", ID_DTYPES),
        Column("item_id", ID_DTYPES),
        Column("ts", (TS_DTYPE,)),
        Column("click", (pl.Int8(),)),
        Column("like", (pl.Int8(),)),
        Column("watch_ms", (pl.Int64(),), nullable=True),
    ),
)
"""Impressions. Nullability here is the *type* contract; value rules (null keys, label not 0/1,
negative watch time, duplicates, ...) are enforced by the ETL's validation, which rejects rows
with a reason instead of failing the file."""

ITEMS = TableSchema(
    "items",
    (
        Column("item_id", ID_DTYPES),
        Column("author_id", ID_DTYPES, nullable=True),
        Column("duration_ms", (pl.Int64(),), nullable=True),
        Column("category", (pl.String(),), nullable=True),
        Column("upload_ts", (TS_DTYPE,), nullable=True),
    ),
)

USERS = TableSchema("users", (Column("user_id", ID_DTYPES),))

TABLES: dict[str, TableSchema] = {t.table: t for t in (EVENTS, ITEMS, USERS)}


class SchemaError(ValueError):
    """A table does not meet its canonical schema; the message names file, column and rule."""


def check_schema(frame_schema: pl.Schema | dict[str, pl.DataType], table: TableSchema, source: str) -> None:
    """Raise :class:`SchemaError` naming ``source`` (a file path), the column and the expected dtype
    when a required column is missing or mistyped. Extra columns pass."""
    schema = dict(frame_schema)
    for col in table.columns:
        if col.name not in schema:
            raise SchemaError(
                f"{source}: {table.table} table is missing required column '{col.name}' "
                f"(expected {col.expected}); columns present: {sorted(schema)}"
            )
        got = schema[col.name]
        if not any(got == d for d in col.dtypes):
            raise SchemaError(
                f"{source}: column '{col.name}' of the {table.table} table has dtype {got}, expected {col.expected}"
            )


def context_columns(frame_schema: pl.Schema | dict[str, pl.DataType]) -> list[str]:
    """Event columns beyond the canonical ones (context such as KuaiRand's ``tab``), in file order."""
    return [c for c in dict(frame_schema) if c not in EVENTS.names]
