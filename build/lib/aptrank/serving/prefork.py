"""Pre-fork multi-process mode of the online scorer (``aptrank serve --workers N``).

One Python process serves on about one core: request parsing, validation, the feature lookup's
Python parts and JSON encoding hold the GIL. :class:`PreforkServer` binds the listening socket once,
then starts N worker processes (:mod:`serving.worker`) that each run the :mod:`serving.http_loop`
event loop (or the threaded stdlib stack) on that same socket; the kernel hands each connection to
one of them (gunicorn's pre-fork model). Workers accept with a small delay per open connection, so
keep-alive connections spread evenly (:data:`serving.http_head.ACCEPT_DELAY_S`).

Workers are started as fresh interpreters that inherit the socket (``fork`` then ``exec``), not
bare ``fork()`` copies of the supervisor: the Polars and onnxruntime thread pools are not fork-safe,
and a supervisor that already used them (a test process, a notebook) could deadlock its children.

Each worker has its own :class:`~serving.holder.ModelHolder`: its own onnxruntime session, registry
polling and hot swap. Workers poll independently, so after the alias moves they switch versions up
to one ``--poll-seconds`` apart; during that window two requests may be answered by different
versions (each response names its ``model_version``; one connection stays on one worker, so what a
single keep-alive client sees never goes back). ``/metrics`` sums all workers
(:mod:`serving.metrics_shared`).

The supervisor restarts a worker that exits (at most :data:`RESTART_LIMIT` times per slot within
:data:`RESTART_WINDOW_S`), and :meth:`PreforkServer.stop` stops all of them gracefully (SIGTERM: stop
accepting, finish requests in flight), killing any still running after a timeout. A worker also stops
by itself when the supervisor disappears, so none is left orphaned.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aptrank.serving.metrics_shared import retire
from aptrank.serving.worker import READY, WorkerConfig, command

log = logging.getLogger("aptrank.serve")
ROOT = Path(__file__).resolve().parents[1]
BACKLOG = 1024
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
SUPERVISE_INTERVAL_S = 0.2
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0


def default_workers() -> int:
    """The CPU cores this process may run on, at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


class WorkerStartError(RuntimeError):
    """A worker exited or timed out before it was ready; ``exit_code`` is its exit status (None: timeout)."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _Worker:
    proc: subprocess.Popen
    channel: socket.socket  # the supervisor's end; closing it tells the worker to stop
    version: str = ""
    restarts: list[float] = field(default_factory=list)


class PreforkServer:
    """N worker processes on one listening socket; ``start()`` returns once all are ready."""

    def __init__(self, config: WorkerConfig, workers: int, host: str = "127.0.0.1", port: int = 8080) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.config, self.size = config, workers
        self.sock = socket.create_server((host, port), backlog=BACKLOG)
        self.host, self.port = self.sock.getsockname()[:2]
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="aptrank-metrics-"))
        self.workers: list[_Worker] = []
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._closed = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc.poll() is None]

    @property
    def versions(self) -> list[str]:
        """The model version each worker reported when it became ready."""
        return [w.version for w in self.workers]

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        fds = (self.sock.fileno(), theirs.fileno())
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            command(self.config, *fds, self.metrics_dir), pass_fds=fds, env={**os.environ, "PYTHONPATH": path}
        )
        theirs.close()
        return _Worker(proc, ours)

    def _wait_ready(self, worker: _Worker, deadline: float) -> None:
        worker.channel.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = worker.channel.recv(4096)
        except TimeoutError:
            line = b""
        if not line.startswith(READY):
            try:
                code = worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise WorkerStartError(f"worker pid {worker.proc.pid} did not become ready (exit code {code})", code)
        worker.version = line.decode().split(" ", 1)[1].strip() if b" " in line else ""
        worker.channel.settimeout(None)

    def start(self, timeout: float = START_TIMEOUT_S) -> PreforkServer:
        """Start the workers, wait until each loaded its model, then supervise in a thread."""
        deadline = time.monotonic() + timeout
        try:
            self.workers = [self._spawn() for _ in range(self.size)]
            for worker in self.workers:
                self._wait_ready(worker, deadline)
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="aptrank-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            for slot, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is None or worker.channel.fileno() < 0:
                    continue
                self._reap(worker)
                now = time.monotonic()
                recent = [t for t in worker.restarts if now - t < RESTART_WINDOW_S]
                if len(recent) >= RESTART_LIMIT:
                    log.error(
                        "worker pid %d exited with code %s; not restarting (%d restarts within %.0f s)",
                        worker.proc.pid,
                        code,
                        len(recent),
                        RESTART_WINDOW_S,
                    )
                    continue
                replacement = self._spawn()
                replacement.restarts = [*recent, now]
                self.workers[slot] = replacement
                log.error(
                    "worker pid %d exited with code %s; restarted as pid %d",
                    worker.proc.pid,
                    code,
                    replacement.proc.pid,
                )
            if not self.pids and all(w.channel.fileno() < 0 for w in self.workers):
                log.error("no worker left; stopping")
                self._stopping.set()

    def _reap(self, worker: _Worker) -> None:
        worker.channel.close()
        retire(self.metrics_dir, worker.proc.pid)

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called or no worker is left."""
        if self._supervisor is None:
            self.start()
        while not self._stopping.wait(0.5):
            pass

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every worker, wait for them (SIGKILL after ``timeout``), release the socket."""
        self._stopping.set()
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in %.0f s; killing it", worker.proc.pid, timeout)
                worker.proc.kill()
                worker.proc.wait()
            worker.channel.close()
        self.sock.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def __enter__(self) -> PreforkServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
