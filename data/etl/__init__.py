"""The Polars ETL behind ``aptrank etl`` (issue #3); see ``data/etl/README.md``.

Public entry points: :func:`run_etl` (the whole job), :func:`load_config` / :class:`EtlConfig`,
:func:`example_files` (a split's part files). Daily incremental runs: :mod:`data.etl.daily`
(``bootstrap``, ``run_day``, ``run_days``); the Spark engine: :mod:`data.etl.spark`. Scorers use
:mod:`data.snapshot` (feature lookup) and trainers/scorers :mod:`data.tensors` (numpy model inputs).
"""

from aptrank.data.etl.config import EtlConfig, EtlConfigError, config_from_dict, load_config
from aptrank.data.etl.run import EtlResult, example_files, run_etl

__all__ = ["EtlConfig", "EtlConfigError", "EtlResult", "config_from_dict", "example_files", "load_config", "run_etl"]
