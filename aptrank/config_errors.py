"""Pydantic's :class:`~pydantic.ValidationError` as ONE :class:`~aptrank.errors.ConfigError`.

The first problem becomes ``<file>: <dotted key>: <rule>`` in the house words
(``train.patience: expected an integer, got 'two'``, ``features.windows[1]: ...``,
``model.experts: unknown key; known: [...]``). A :class:`ConfigError` that a model's own rule raised
(its key relative to that model) is completed with the model's place in the document. Depends on
pydantic and :mod:`aptrank.errors` only.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Tag, ValidationError

from aptrank.errors import ConfigError

TAG_MARK = "="
"""Discriminated unions tag their members ``<field>=<value>`` (``arch=mmoe``); error paths drop tags."""


def config_error(
    error: ValidationError,
    source: str | None = None,
    prefix: str = "",
    error_class: type[ConfigError] = ConfigError,
    model: type | None = None,
) -> ConfigError:
    """The first problem of ``error`` as one :class:`ConfigError` with its dotted key (an unknown key
    also lists the keys ``model`` knows at that place)."""
    first = error.errors(include_url=False)[0]
    key = dotted(prefix, first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # a model's own rule: its key is relative to that model
        return error_class(dotted(key, tuple(cause.key.split("."))) if cause.key else key, cause.reason, source)
    if first["type"] == "union_tag_invalid":
        field, _, tag = str(first["ctx"]["tag"]).partition(TAG_MARK)
        known = [t.partition(TAG_MARK)[2] for t in str(first["ctx"]["expected_tags"]).replace("'", "").split(", ")]
        return error_class(dotted(key, (field,)), f"unknown {field} {tag!r}; known: {sorted(known)}", source)
    reason = describe(first)
    known = known_keys(model, first["loc"][:-1]) if first["type"] in _UNKNOWN and model else []
    return error_class(key, f"{reason}; known: {known}" if known else reason, source)


def known_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys of the mapping at ``loc`` inside ``model`` (a model class), or [] when not a model."""
    node = model
    for part in loc:
        node = _unwrap(node)
        origin, args = typing.get_origin(node), typing.get_args(node)
        if origin in (typing.Union, types.UnionType):  # a discriminated union: ``part`` is the tag
            tagged = [
                a for a in args if any(isinstance(m, Tag) and m.tag == part for m in getattr(a, "__metadata__", ()))
            ]
            node = tagged[0] if tagged else None
        elif origin is tuple and isinstance(part, int):
            node = args[0]
        elif origin is dict and isinstance(part, str):
            node = args[1]
        else:
            fields = getattr(node, "__pydantic_fields__", {})
            node = fields[part].annotation if part in fields else None
    fields = getattr(_unwrap(node), "__pydantic_fields__", None)
    return sorted(fields) if fields else []


def _unwrap(hint: Any) -> Any:
    """``hint`` without ``Annotated`` and ``| None`` (a union of several types stays)."""
    while True:
        if typing.get_origin(hint) is Annotated and not any(isinstance(m, Tag) for m in hint.__metadata__):
            hint = typing.get_args(hint)[0]
        elif typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
            rest = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(rest) != 1:
                return hint
            hint = rest[0]
        else:
            return hint


def dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    """``("features", "windows", 1)`` -> ``features.windows[1]`` after ``prefix``; union tags dropped."""
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif TAG_MARK not in str(part):
            key = f"{key}.{part}" if key else str(part)
    return key


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "dataclass_type": "a mapping",
    "dataclass_args_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def describe(problem: Mapping[str, Any]) -> str:
    """One pydantic error as the rule it breaks, in the house words."""
    kind, value, ctx = problem["type"], problem.get("input"), problem.get("ctx") or {}
    if kind in _UNKNOWN:
        return "unknown key"
    if kind in ("missing", "missing_argument"):
        return "required key missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {value!r}"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))}, got {value!r}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} value(s), got {value!r}"
    if kind == "too_long":
        return f"takes at most {ctx['max_length']} value(s), got {value!r}"
    return f"{problem['msg']}, got {value!r}"
