"""Worker supervision for ``aptrank serve``: a crashed worker is respawned, with backoff, never given up.

granian 2.8.7 (``respawn_failed_workers=True``) respawns a dead worker at once, but a worker that
dies again within 5.5 s of its respawn is taken for a crash loop and the whole server exits; without
the option the first death stops the server. Either way one unlucky worker (the OOM killer, an
operator's ``kill -9``, a native crash on one request) takes the instance's capacity with it.

:class:`BackoffServer` replaces that rule with capped exponential backoff, the policy of process
supervisors (systemd ``RestartSec``/``RestartSteps``, Kubernetes' CrashLoopBackOff: 10 s doubling
to 5 min): a worker that dies after a stable life (:attr:`RestartBackoff.stable_after_s`) is
respawned at once (so is one's first death after the server started); one that dies again sooner
after its respawn waits ``first_delay_s``, then twice as long each
time, up to ``max_delay_s``, and is respawned for as long as the server runs. While a worker is
missing, ``/readyz`` answers 503 ("1 of 2 workers ready", :func:`serving.app.readiness`), so a load
balancer routes around the instance's lost capacity instead of the server pretending it is whole.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from granian.server import Server

log = logging.getLogger("aptrank.serve")


@dataclass
class RestartBackoff:
    """Seconds to wait before respawning a worker that just died, from how long it lived."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 30.0
    _born: dict[int, float] = field(default_factory=dict)
    _streak: dict[int, int] = field(default_factory=dict)

    def born(self, worker: int, now: float) -> None:
        """Worker ``worker`` (its index) was (re)spawned at ``now`` (monotonic seconds)."""
        self._born[worker] = now

    def delay(self, worker: int, now: float) -> float:
        """The wait before respawning ``worker``, which died at ``now``: 0 after a stable life, else
        ``first_delay_s * 2**(n-1)`` for its n-th quick death in a row, capped at ``max_delay_s``."""
        lived = now - self._born.get(worker, -math.inf)
        streak = 0 if lived >= self.stable_after_s else self._streak.get(worker, 0) + 1
        self._streak[worker] = streak
        return 0.0 if streak == 0 else min(self.first_delay_s * 2 ** (streak - 1), self.max_delay_s)


class BackoffServer(Server):  # type: ignore[misc, valid-type]
    """granian's process server whose main loop respawns dead workers with :class:`RestartBackoff`
    (module docstring); SIGINT/SIGTERM and SIGHUP behave as in granian."""

    def __init__(self, *args: object, backoff: RestartBackoff | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = backoff or RestartBackoff()

    def _serve_loop(self, spawn_target, target_loader) -> None:  # granian's signature
        due: dict[int, float] = {}  # worker index -> when to respawn it
        while True:
            wait = max(0.0, min(due.values()) - time.monotonic()) if due else None
            self.main_loop_interrupt.wait(wait)
            if self.interrupt_signal:
                break
            self.main_loop_interrupt.clear()  # before reading: a death reported after it sets it again
            dead = list(self.interrupt_children)
            del self.interrupt_children[: len(dead)]
            now = time.monotonic()
            for worker in dead:
                delay = self.backoff.delay(worker, now)
                if delay:
                    log.warning(
                        "worker-%d died within %g s of its respawn: respawning it in %g s (backoff)",
                        worker + 1,
                        self.backoff.stable_after_s,
                        delay,
                    )
                due[worker] = now + delay
            ready = sorted(w for w, at in due.items() if at <= time.monotonic())
            if ready:
                for worker in ready:
                    del due[worker]
                self._respawn_workers(ready, spawn_target, target_loader)
                for worker in ready:
                    self.backoff.born(worker, time.monotonic())
                self._metrics.incr_respawn_err(len(ready))
            if self.reload_signal:
                self._reload(spawn_target, target_loader)
