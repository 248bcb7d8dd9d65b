"""A grid's datasets, built under ``<workdir>/datasets/<name>/``: generated logs (``raw/``, by
:func:`aptrank.data.synthetic.generate`), per ETL variant (:func:`aptrank.pipeline.experiment.variants.etl_key`)
the ETL output (``features/`` without ETL overrides, ``<etl key>/features/`` with them, by
:func:`aptrank.data.etl.run.run_etl`) and the served-evaluation snapshot of its test split
(``[<etl key>/]served/``, :func:`aptrank.pipeline.served_evaluation.snapshot_as_of_split`; only
when the ETL config splits at dates: with fraction splits an ETL cut at the test split's start
places its boundaries elsewhere, so the cells then have the point-in-time evaluation only).

They are rebuilt on every invocation: the generator and the ETL are byte-deterministic (same
parameters, same bytes), so a rebuilt dataset has the same :func:`aptrank.pipeline.provenance.fingerprint`
and finished cells keep their hash; a changed input or ETL config changes it and reruns them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from aptrank.data.etl.config import load_config as load_etl_config
from aptrank.data.etl.run import run_etl
from aptrank.data.synthetic import generate
from aptrank.pipeline.config import DataConfig
from aptrank.pipeline.experiment.grid import DatasetDecl
from aptrank.pipeline.experiment.variants import BASE_ETL, VariantDecl, etl_key, variant_etl_raw
from aptrank.pipeline.provenance import fingerprint
from aptrank.pipeline.served_evaluation import ServedSnapshot, snapshot_as_of_split

GENERATED_SOURCE = "canonical"
SERVED_SPLIT = "test"
DERIVED_ETL_CONFIG = "etl_config.yaml"


class DatasetError(RuntimeError):
    """A dataset could not be built (the ETL's data-quality gate failed); names the dataset."""


@dataclass(frozen=True)
class PreparedDataset:
    name: str
    features: Path
    fingerprint: str  # of the ETL output (FeatureSpec and splits): part of every cell's hash
    tasks: tuple[str, ...]
    data: DataConfig  # source, input and (derived) ETL config that made ``features``
    served: ServedSnapshot | None  # the test split's snapshot as of its start; None: fraction splits


def generate_dataset(name: str, decl: DatasetDecl, root: Path, log: Callable[[str], None]) -> tuple[str, str]:
    """(source, input) of dataset ``name``: its declared log, or one generated under ``root/<name>/raw``."""
    if decl.generator is None:
        return str(decl.source), str(decl.input)
    raw = root / name / "raw"
    log(
        f"[experiment] dataset {name}: generate {decl.generator.events} events "
        f"(task_correlation {decl.generator.task_correlation}) -> {raw}"
    )
    generate(raw, decl.generator, overwrite=True)
    return GENERATED_SOURCE, str(raw)


def prepare_dataset(
    name: str,
    decl: DatasetDecl,
    root: Path,
    log: Callable[[str], None],
    variant: VariantDecl | None = None,
    raw: tuple[str, str] | None = None,
) -> PreparedDataset:
    """Generate (when declared and ``raw`` is not given), run the ETL of ``variant`` and make the
    served snapshot under ``root/<name>[/<etl key>]``."""
    source, data = raw or generate_dataset(name, decl, root, log)
    key = etl_key(variant)
    folder = root / name if key == BASE_ETL else root / name / key
    etl_config = decl.etl_config
    if key != BASE_ETL:
        folder.mkdir(parents=True, exist_ok=True)
        etl_config = str(folder / DERIVED_ETL_CONFIG)
        Path(etl_config).write_text(yaml.safe_dump(variant_etl_raw(decl.etl_config, variant), sort_keys=True))
    features = folder / "features"
    log(f"[experiment] dataset {name}: ETL {source} {data} ({etl_config}) -> {features}")
    result = run_etl(source, data, features, load_etl_config(etl_config))
    if not result.passed:
        failures = "; ".join(result.summary["gates"]["failures"])
        raise DatasetError(f"dataset {name}: ETL data-quality gate failed ({failures}); see {features}")
    data_cfg = DataConfig(source=source, input=data, etl_config=etl_config)
    served_dir = folder / "served"
    if served_dir.exists():
        shutil.rmtree(served_dir)
    served = None
    if load_etl_config(etl_config).splits.test_start is None:
        log(
            f"[experiment] dataset {name}: no served evaluation ({etl_config} splits by event fractions; "
            "a snapshot as of the test split's start needs splits.valid_start and splits.test_start)"
        )
    else:
        log(f"[experiment] dataset {name}: served-evaluation snapshot as of the {SERVED_SPLIT} split's start")
        served = snapshot_as_of_split(data_cfg, features, SERVED_SPLIT, served_dir)
    return PreparedDataset(name, features, fingerprint(features), tuple(result.spec.task_names), data_cfg, served)
