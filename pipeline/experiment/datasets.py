"""A grid's datasets, built under ``<workdir>/datasets/<name>/``: generated logs (``raw/``, by
:func:`aptrank.data.synthetic.generate`) and the ETL output (``features/``, by :func:`aptrank.data.etl.run.run_etl`).

They are rebuilt on every invocation: the generator and the ETL are byte-deterministic (same
parameters, same bytes), so a rebuilt dataset has the same :func:`aptrank.pipeline.provenance.fingerprint`
and finished cells keep their hash; a changed input or ETL config changes it and reruns them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aptrank.data.etl.config import load_config as load_etl_config
from aptrank.data.etl.run import run_etl
from aptrank.data.synthetic import generate
from aptrank.pipeline.experiment.grid import DatasetDecl
from aptrank.pipeline.provenance import fingerprint

GENERATED_SOURCE = "canonical"


class DatasetError(RuntimeError):
    """A dataset could not be built (the ETL's data-quality gate failed); names the dataset."""


@dataclass(frozen=True)
class PreparedDataset:
    name: str
    features: Path
    fingerprint: str  # of the ETL output (FeatureSpec and splits): part of every cell's hash
    tasks: tuple[str, ...]


def prepare_dataset(name: str, decl: DatasetDecl, root: Path, log: Callable[[str], None]) -> PreparedDataset:
    """Generate (when declared) and run the ETL for dataset ``name`` under ``root/<name>``."""
    folder = root / name
    source, data = decl.source, decl.input
    if decl.generator is not None:
        raw = folder / "raw"
        log(
            f"[experiment] dataset {name}: generate {decl.generator.events} events "
            f"(task_correlation {decl.generator.task_correlation}) -> {raw}"
        )
        generate(raw, decl.generator, overwrite=True)
        source, data = GENERATED_SOURCE, str(raw)
    features = folder / "features"
    log(f"[experiment] dataset {name}: ETL {source} {data} ({decl.etl_config}) -> {features}")
    result = run_etl(str(source), str(data), features, load_etl_config(decl.etl_config))
    if not result.passed:
        failures = "; ".join(result.summary["gates"]["failures"])
        raise DatasetError(f"dataset {name}: ETL data-quality gate failed ({failures}); see {features}")
    return PreparedDataset(name, features, fingerprint(features), tuple(result.spec.task_names))
