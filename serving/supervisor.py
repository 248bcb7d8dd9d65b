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

Listening sockets: one per worker (granian 2.8's Linux default, ``SO_REUSEPORT``, granian PR #897),
or with ``shared_listener`` (``aptrank serve --shared-listener``) one socket bound and listening in
the server process and shared by every worker (:meth:`BackoffServer._init_shared_socket`; granian
2.7 on Linux, 2.8 elsewhere, gunicorn and uvicorn ``--workers``). Measured with 2 workers:

* **Per-worker listeners** (default). The kernel hashes each new connection to one of the listeners
  alive at that moment, so keep-alive connections spread evenly (8 clients onto 2 workers: 6/2 to
  4/4 in 7 of 8 tries) and ``bench/serve_load.py`` meets its p99 target. Around a worker's death:
  a worker reports ready (``/readyz`` 200) once its model is loaded and starts listening 0.02 to
  0.75 s later; silent sockets opened in between all queue at the other worker, whose queue then
  waits while the respawned worker's 32 slots serve newer clients. A dying worker's listener takes
  its accept queue with it (those connections are reset unless the ``net.ipv4.tcp_migrate_req``
  sysctl is 1), and while no worker listens new connections are refused (~0.1 s after a kill; for
  seconds when every worker is dead: 2,342 refused connects in the test).
* **Shared listener.** One accept queue outlives every worker: a dying worker loses only the
  connections it had accepted, new ones are never refused while the server runs, and beyond
  ``workers x max_connections`` a new client waits its turn behind every queued one
  (``tests/serving/online/test_server_respawn.py``, which fails on both points without it). The
  cost: whichever worker wakes first accepts, so connections are not spread evenly: 8 keep-alive
  clients opened one after another landed 7/1 or 8/0 in 5 of 8 tries, and ``bench/serve_load.py``
  at c=8 measured p99 12.7 ms and 1,205 req/s against 8.1 ms and 1,897 req/s of per-worker
  listeners (wrk, 8 connections: 852 req/s, one worker doing the work). Hence opt-in: for
  deployments where workers die often or connections are short-lived, not for a few long-lived
  keep-alive connections from a load balancer.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import time
from dataclasses import dataclass, field

from granian.net import SocketSpec
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

    def __init__(
        self, *args: object, backoff: RestartBackoff | None = None, shared_listener: bool = False, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = backoff or RestartBackoff()
        self.shared_listener = shared_listener

    def _init_shared_socket(self) -> None:
        """With ``shared_listener``: bind and listen here, in the server process, and hand the socket
        to every worker (module docstring): granian's own path off Linux (``AbstractServer._init_shared_socket`` with
        ``MPServer``'s inheritable ``_sso``, passed to spawned workers by file descriptor), plus the
        ``listen`` that granian leaves to the workers on Linux."""
        if not self.shared_listener or self.bind_uds or sys.platform != "linux":
            super()._init_shared_socket()
            return
        self._ssp = None  # workers then take the shared socket (granian's ``(spec, holder)`` pair)
        self._shd = SocketSpec(self.bind_addr, self.bind_port, self.backlog).build()
        self._sfd = self._shd.get_fd()
        self._sso = socket.socket(fileno=self._sfd)
        self._sso.set_inheritable(True)
        self._sso.listen(self.backlog)

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
