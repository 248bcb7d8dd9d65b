"""The Python API a notebook uses; every name is also importable from ``aptrank`` itself (lazily:
``import aptrank`` imports neither torch nor Polars).

    etl = aptrank.run_etl("kuairand", "data/samples/kuairand-pure", "work/nb/features")
    trained = aptrank.train(etl.out_dir, "configs/demo.yaml", workdir="work/nb")
    scorer = aptrank.load_scorer(trained.model_uri, tracking_uri=trained.tracking_uri)
    candidates = aptrank.read_candidates("kuairand", "data/samples/kuairand-pure", rows=1000)
    scored = scorer.score(candidates)  # also a pandas DataFrame

Each function is the library the CLI command of the same name calls (``aptrank etl``, ``train``
with registration as the job does it, ``export``, ``run``, ``score``); errors are exceptions that
name the file, key or column and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from aptrank.data.etl.run import EtlResult
    from aptrank.pipeline.config import JobConfig
    from aptrank.pipeline.job import JobOutcome
    from aptrank.pipeline.run_export import RunExport
    from aptrank.pipeline.scoring import ModelScorer

__all__ = ["TrainedModel", "export", "load_scorer", "read_candidates", "run_etl", "run_job", "train"]


@dataclass(frozen=True)
class TrainedModel:
    """A trained, exported and registered model version (``promoted``: the gate made it champion;
    else it is the ``challenger``)."""

    model_uri: str
    champion_uri: str
    tracking_uri: str
    run_id: str
    created: bool
    promoted: bool
    metrics: dict[str, Any]
    gate: dict[str, Any]

    @classmethod
    def from_outcome(cls, outcome: JobOutcome) -> TrainedModel:
        from aptrank.pipeline.job import JobExit

        s = outcome.summary
        return cls(
            model_uri=s["model_uri"],
            champion_uri=s["champion_uri"],
            tracking_uri=s["tracking_uri"],
            run_id=s["run_id"],
            created=bool(s["created"]),
            promoted=outcome.code == JobExit.OK and s.get("gate", {}).get("decision", "promoted") == "promoted",
            metrics=s["metrics"],
            gate=s.get("gate", {}),
        )


def run_etl(source: str, input: str | Path, out: str | Path, config: str | Path | None = None) -> EtlResult:
    """The ETL of ``input`` (``source``: ``kuairand`` or ``canonical``) into ``out``, with the ETL
    config file ``config`` (default settings when None). ``result.passed`` says whether the
    data-quality gates passed; ``result.spec`` is the FeatureSpec."""
    from aptrank.data.etl.config import load_config
    from aptrank.data.etl.run import run_etl as etl

    return etl(source, input, out, load_config(config) if config is not None else None)


def _job_config(config: str | Path | JobConfig | None, overrides: Sequence[str]) -> JobConfig:
    from aptrank.pipeline.config import JobConfig, load_config

    if isinstance(config, JobConfig):
        if overrides:
            raise ValueError("overrides apply to a config file; pass a path or None with overrides")
        return config
    return load_config(config, list(overrides))


def train(
    features: str | Path,
    config: str | Path | JobConfig | None = None,
    *,
    overrides: Sequence[str] = (),
    workdir: str | Path | None = None,
    log: Any = None,
) -> TrainedModel:
    """Train on the ETL output ``features`` with the job config ``config`` (a YAML path, a
    ``JobConfig`` or None for the defaults; ``overrides``: ``key=value`` as ``--set``), then export
    behind the parity gate, register the version and run the champion gate, as the job does after
    its ETL. ``workdir`` (default ``work/<job name>``) holds the runs and the SQLite MLflow store
    unless ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` point elsewhere. Same data and config: the
    existing version, nothing retrained."""
    from aptrank.pipeline.job import train_and_register
    from aptrank.pipeline.lock import JobLock

    cfg = _job_config(config, overrides)
    work = Path(workdir) if workdir is not None else Path("work") / cfg.name
    work.mkdir(parents=True, exist_ok=True)
    with JobLock(work, cfg.name):
        outcome = train_and_register(cfg, Path(features), work, log or (lambda _msg: None))
    return TrainedModel.from_outcome(outcome)


def run_job(
    config: str | Path | JobConfig | None = None,
    *,
    overrides: Sequence[str] = (),
    workdir: str | Path | None = None,
    log: Any = None,
) -> TrainedModel:
    """The scheduled job (``aptrank run``): ETL -> train -> export -> register -> gate."""
    from aptrank.pipeline.job import run_job as job

    cfg = _job_config(config, overrides)
    work = Path(workdir) if workdir is not None else Path("work") / cfg.name
    return TrainedModel.from_outcome(job(cfg, work, log or (lambda _msg: None)))


def export(
    run: str | Path,
    out: str | Path,
    *,
    features: str | Path | None = None,
    tracking_uri: str | None = None,
    fold_rows: int | None = None,
) -> RunExport:
    """Export a trained run (a run folder or an MLflow run id) to ONNX behind the parity gate
    (``aptrank export``); raises ``ParityError`` when the graph does not match PyTorch."""
    from aptrank.pipeline.run_export import export_run

    return export_run(run, out, features=features, tracking_uri=tracking_uri, fold_rows=fold_rows)


def load_scorer(
    model: str | Path,
    *,
    features: str | Path | None = None,
    tracking_uri: str | None = None,
    weights: dict[str, float] | None = None,
    threads: int = 1,
) -> ModelScorer:
    """Open a model (``models:/NAME@champion``, ``models:/NAME/N`` or an ONNX file) for scoring
    DataFrames: ``.score(df)`` adds ``p_<task>`` per task and the fused ``score``."""
    from aptrank.pipeline.scoring import load_scorer as open_scorer

    return open_scorer(model, features=features, tracking_uri=tracking_uri, weights=weights, threads=threads)


def read_candidates(source: str, path: str | Path, rows: int | None = None) -> pl.DataFrame:
    """Candidate rows in canonical columns (``user_id``, ``item_id``, ``ts``, context) read through
    the source adapter (``kuairand`` folder or ``canonical`` files), the first ``rows`` or all."""
    from aptrank.serving.candidates import scan_candidates

    frame = scan_candidates(source, path)
    return (frame if rows is None else frame.head(rows)).collect()
