"""Frozen dataclasses from plain data (parsed YAML/JSON), checked against their type hints.

Unknown keys, wrong types and values outside a ``Literal`` raise :class:`TypedDataError` naming the
source and the dotted key (``features.history[0].max_len``). Supported hints: the dataclasses
themselves, ``str``, ``int``, ``float``, ``bool``, ``Literal``, ``X | None``, ``tuple[X, ...]`` and
``dict[str, X]``; YAML dates are accepted where a ``str`` is expected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import Any, Literal


class TypedDataError(ValueError):
    """Plain data does not fit a dataclass; the message names the source and the key."""


def build_dataclass(cls: type, data: Any, source: str) -> Any:
    """An instance of dataclass ``cls`` from ``data`` (a mapping)."""
    return _build(cls, data, "", source)


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise TypedDataError(f"{source}: {where or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TypedDataError(
            f"{source}: unknown key '{_join(where, unknown[0])}' (known keys here: {', '.join(sorted(names))})"
        )
    kwargs = {k: _value(hints[k], v, _join(where, k), source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise TypedDataError(f"{source}: {where or 'top level'}: {e}") from e


def _value(hint: Any, v: Any, where: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, v, where, source)
    if origin is Literal:
        if v not in args:
            raise TypedDataError(f"{source}: {where}: {v!r} is not one of {', '.join(map(repr, args))}")
        return v
    if origin is tuple:
        if not isinstance(v, list | tuple):
            raise TypedDataError(f"{source}: {where}: expected a list, got {v!r}")
        return tuple(_value(args[0], x, f"{where}[{i}]", source) for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict):
            raise TypedDataError(f"{source}: {where}: expected a mapping, got {v!r}")
        return {str(k): _value(args[1], x, f"{where}.{k}", source) for k, x in v.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, v, where, source)
    return _scalar(hint, v, where, source)


def _scalar(hint: Any, v: Any, where: str, source: str) -> Any:
    if hint is float and isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if hint is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if hint is bool and isinstance(v, bool):
        return v
    if hint is str and isinstance(v, str):
        return v
    if hint is str and isinstance(v, dt.date):  # YAML reads 2022-04-29 as a date
        return v.isoformat()
    raise TypedDataError(f"{source}: {where}: expected {getattr(hint, '__name__', hint)}, got {v!r}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
