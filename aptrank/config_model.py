"""The one config mechanism: typed pydantic v2 models, parsed once at the boundary.

Every config section of aptrank (job, model, MTL, ETL, generator) is a :class:`ConfigModel`: unknown
keys are refused, values are checked strictly (YAML already types them: ``"two"``, and also ``"3"``,
are not integers; an integer is a valid float; ``yes`` is not a boolean unless YAML read it as one),
and sections that were frozen dataclasses stay frozen. A :class:`pydantic.ValidationError` becomes
ONE :class:`~aptrank.errors.ConfigError` naming the file and the dotted key of the first problem,
e.g. ``configs/demo.yaml: train.patience: expected an integer, got 'two'``.

Rules beyond types (ranges, combinations) live in each model's ``model_validator(mode="after")``
and raise :class:`ConfigError` with a key relative to that model; the key is completed with the
model's place in the document. Depends on pydantic and :mod:`aptrank.errors` only, so
``aptrank.apt`` can use it without the pipeline.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Tag, ValidationError

from aptrank.errors import ConfigError


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _date_to_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


AsTuple = BeforeValidator(_list_to_tuple)
"""YAML lists are accepted where a (frozen) tuple is declared: ``Annotated[tuple[int, ...], AsTuple]``."""

DateText = Annotated[str, BeforeValidator(_date_to_text)]
"""A date or datetime kept as text; YAML reads an unquoted ``2022-04-29`` as a date, accepted too."""

TAG_MARK = "="
"""Discriminated unions tag their members ``<field>=<value>`` (``arch=mmoe``); error paths drop tags."""


class ConfigModel(BaseModel):
    """Base of every config section: strict types, no unknown keys, frozen, one error type."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, validate_default=False, use_attribute_docstrings=True
    )

    error_class: ClassVar[type[ConfigError]] = ConfigError
    """The :class:`ConfigError` subclass this section raises (a room may keep its own name)."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, error_class=self.error_class, model=type(self)) from None

    @classmethod
    def parse(cls, data: Any, source: str | None = None, prefix: str = "") -> Self:
        """Validate plain data (parsed YAML/JSON) into this model; ``prefix`` is its place in the
        document (``mtl``), ``source`` the file. Raises :attr:`error_class` naming both."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise cls.error_class(prefix, f"expected a mapping, got {data!r}", source)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise config_error(e, source, prefix, cls.error_class, cls) from None
        except ConfigError as e:  # raised by a nested model's own __init__ (never for dict input)
            raise e.within(prefix, source) from None

    def to_dict(self) -> dict[str, Any]:
        """Every value, JSON-ready (tuples as lists)."""
        return self.model_dump(mode="json")

    def given(self) -> dict[str, Any]:
        """Only the values the config set (recursively), JSON-ready: what the user wrote."""
        return self.model_dump(mode="json", exclude_unset=True)


def read_yaml_mapping(path: str | Path, what: str, error_class: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (``what`` names the file's kind in errors)."""
    p = Path(path)
    if not p.is_file():
        raise error_class("", f"{what} file not found", str(p))
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise error_class("", f"not valid YAML ({e})", str(p)) from e
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise error_class("", f"{what} must be a mapping at top level", str(p))
    return raw


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
