"""The ``aptrank serve`` process the API and connection tests share (one start for both modules): the
tiny model of ``tests/serving/conftest.py`` on 2 granian workers, small request limits, a 2 s header
timeout; stopped with SIGTERM at the end, which must exit 0 (graceful stop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_http import WEIGHTS, Client, ServeProcess

from aptrank.serving.service import Limits

LIMITS = Limits(max_candidates=300, max_body_bytes=20_000)
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="session")
def server(model_path: Path, etl_dir: Path) -> Iterator[ServeProcess]:
    weights = [a for task, w in WEIGHTS.items() for a in ("--weight", f"{task}={w}")]
    limits = ["--max-candidates", str(LIMITS.max_candidates), "--max-body-bytes", str(LIMITS.max_body_bytes)]
    args = ["--model", str(model_path), "--features", str(etl_dir), "--poll-seconds", "0", *weights, *limits]
    timeouts = ["--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)]
    with ServeProcess(*args, *timeouts) as proc:
        yield proc
        code = proc.stop()
    assert code == 0  # SIGTERM: graceful stop


@pytest.fixture(scope="session")
def client(server: ServeProcess) -> Client:
    return Client(server.port)
