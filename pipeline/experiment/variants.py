"""The grid's ``variants`` axis: named sets of job-config and ETL-config overrides.

A variant ``{job: {...}, etl: {...}}`` deep-merges ``job`` into the grid's ``job`` section for its
cells and ``etl`` into each dataset's ETL config file. Variants with the same ETL overrides share
one derived ETL config and one ETL output per dataset (:func:`etl_key`), computed once per grid run.
A grid without ``variants`` has one implicit variant with no overrides, and its cell ids and table
names are the ones grids had before the axis existed (so earlier work dirs resume).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field

from aptrank.config_model import ConfigModel, read_yaml_mapping
from aptrank.pipeline.provenance import canonical_hash

BASE_ETL = "base"


class VariantDecl(ConfigModel):
    """One variant: overrides of the job config (``pipeline.config`` sections) and of the ETL config."""

    job: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the grid's job section")
    etl: dict[str, Any] = Field(default_factory=dict, description="deep-merged into each dataset's ETL config")


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in: mappings recursively, any other value replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def etl_key(variant: VariantDecl | None) -> str:
    """The name of a variant's ETL output folder: ``base`` without ETL overrides, else
    ``etl-<hash of the overrides>`` (equal overrides, one output)."""
    if variant is None or not variant.etl:
        return BASE_ETL
    return f"etl-{canonical_hash(variant.etl)[:12]}"


def variant_etl_raw(etl_config: str, variant: VariantDecl | None) -> dict[str, Any]:
    """The ETL config file ``etl_config`` as plain data with the variant's ETL overrides merged in."""
    from aptrank.data.etl.config import EtlConfigError

    raw = read_yaml_mapping(etl_config, "ETL config", EtlConfigError)
    return merged(raw, variant.etl) if variant is not None else raw
