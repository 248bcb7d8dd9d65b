"""Child process of the crash tests: ``aptrank run`` with the promotion's step hook replaced, so the
job SIGKILLs itself right after the step named by ``$APTRANK_TEST_KILL_AFTER`` is durable. Only this
helper reads that variable; the job itself has no test hook beyond the no-op
:func:`aptrank.pipeline.promotion.step_done`.

Usage: ``python -m tests.pipeline.crash_job <aptrank run arguments>``.
"""

from __future__ import annotations

import os
import signal
import sys

from aptrank.pipeline import promotion
from aptrank.pipeline.cli import app

KILL_AFTER = os.environ.get("APTRANK_TEST_KILL_AFTER", "")


def kill_after_step(name: str, version: str | None, step: str) -> None:
    if step == KILL_AFTER:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    promotion.step_done = kill_after_step
    app(["run", *sys.argv[1:]])
