"""Issue #20: first runs of several configs starting at once on one fresh SQLite store migrate it one
at a time (``pipeline.mlflow_store.migration_lock``): every process opens it, none dies on the
half-created schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPEN = "from aptrank.pipeline.mlflow_store import connect; c = connect(sys.argv[1]); print(len(c.search_experiments()))"


def test_concurrent_first_connections_to_a_fresh_store_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import sys; {OPEN}", uri],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2][-2000:] for r in results if r[0]]
    assert all(r[1].strip() == "1" for r in results)  # the Default experiment, created once
    assert (tmp_path / "mlflow.db.migrate.lock").is_file()
