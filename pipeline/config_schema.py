"""The published JSON Schemas of the config files, generated from the typed models.

``docs/job-config.schema.json`` (:class:`pipeline.config.JobConfig`, ``configs/*.yaml``) and
``docs/etl-config.schema.json`` (:class:`data.etl.config.EtlConfig`, ``configs/etl/*.yaml``) let an
editor complete and check a config as it is typed (the YAML files name them in a
``# yaml-language-server: $schema=...`` header). Regenerate them after changing a config model:

    python -m aptrank.pipeline.config_schema          # rewrite docs/*.schema.json
    python -m aptrank.pipeline.config_schema --check  # exit 1 when a committed schema is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aptrank.config_model import ConfigModel
from aptrank.data.etl.config import EtlConfig
from aptrank.pipeline.config import JobConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMAS: dict[str, tuple[type[ConfigModel], str]] = {
    "job-config.schema.json": (JobConfig, "aptrank job config (configs/*.yaml)"),
    "etl-config.schema.json": (EtlConfig, "aptrank ETL config (configs/etl/*.yaml)"),
}


def schema_of(model: type[ConfigModel], title: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that ``model`` validates, as the published file holds it."""
    body = model.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **body, "title": title}


def schema_text(name: str) -> str:
    """The text of the published schema file ``name`` (a key of :data:`SCHEMAS`)."""
    model, title = SCHEMAS[name]
    return json.dumps(schema_of(model, title), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aptrank.pipeline.config_schema", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a schema file is stale")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of the schema files (default: docs/)")
    args = parser.parse_args(argv)
    stale = []
    for name in SCHEMAS:
        path, text = args.out / name, schema_text(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)} (run python -m aptrank.pipeline.config_schema)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
