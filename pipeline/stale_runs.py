"""Runs a killed scheduled job left RUNNING: found by the job's tags and closed as FAILED when the
job next starts (issue #20: a run whose process was killed, or whose tracking server died before it
could be closed, stays RUNNING on the server)."""

from __future__ import annotations

from typing import Any

from mlflow.entities import RunStatus

from aptrank.pipeline.mlflow_store import mlflow_errors

TAG_SCHEDULED = "aptrank.scheduled"  # on the runs of `aptrank run`: the job's lock folder (its work dir)


def fail_stale_runs(client: Any, experiment: str, job: str, lock_dir: str) -> list[str]:
    """Mark the RUNNING runs of scheduled job ``job`` whose lock is in ``lock_dir`` FAILED; return
    their ids. Call it only holding that lock (:class:`aptrank.pipeline.lock.JobLock`): then none
    of them is live (jobs of the same config in other work dirs are left alone)."""
    if "'" in lock_dir or "'" in job:
        return []  # MLflow's filter grammar has no escapes; such runs are left for a person to close
    with mlflow_errors(client.tracking_uri, f"close stale runs of job '{job}'"):
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        query = (
            f"tags.`{TAG_SCHEDULED}` = '{lock_dir}' and tags.`aptrank.job` = '{job}' and attributes.status = 'RUNNING'"
        )
        runs = client.search_runs([exp.experiment_id], query)
        for run in runs:
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
    return [run.info.run_id for run in runs]
