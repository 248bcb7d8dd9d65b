"""The one config mechanism: typed pydantic v2 models, parsed once at the boundary.

Every config section of aptrank (job, model, MTL, ETL, generator) is a :class:`ConfigModel`: unknown
keys are refused, values are checked strictly (YAML already types them: ``"two"``, and also ``"3"``,
are not integers; an integer is a valid float; ``yes`` is not a boolean unless YAML read it as one),
and sections that were frozen dataclasses stay frozen. A :class:`pydantic.ValidationError` becomes
ONE :class:`~aptrank.errors.ConfigError` naming the file and the dotted key of the first problem,
e.g. ``configs/demo.yaml: train.patience: expected an integer, got 'two'``
(:mod:`aptrank.config_errors`).

Rules beyond types (ranges, combinations) live in each model's ``model_validator(mode="after")``
and raise :class:`ConfigError` with a key relative to that model; the key is completed with the
model's place in the document. Depends on pydantic and :mod:`aptrank.errors` only, so
``aptrank.apt`` can use it without the pipeline.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from aptrank.config_errors import config_error
from aptrank.errors import ConfigError


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _date_to_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e6`` / ``3E-4`` as numbers (YAML 1.2 floats; YAML 1.1
    wants a dot, ``1.0e+6``, and would hand the strict models the string ``'1e6'``)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML the way every config file and ``--set`` value is read."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass


AsTuple = BeforeValidator(_list_to_tuple)
"""YAML lists are accepted where a (frozen) tuple is declared: ``Annotated[tuple[int, ...], AsTuple]``."""

DateText = Annotated[str, BeforeValidator(_date_to_text)]
"""A date or datetime kept as text; YAML reads an unquoted ``2022-04-29`` as a date, accepted too."""


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
        raw = parse_yaml(p.read_text())
    except yaml.YAMLError as e:
        raise error_class("", f"not valid YAML ({e})", str(p)) from e
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise error_class("", f"{what} must be a mapping at top level", str(p))
    return raw
