"""A per-config job lock, so two runs of one config never overlap (cron or Airflow retrying while a
run is still going, two people starting the same job).

The lock is ``<workdir>/locks/<config name>.lock``, held with ``flock(2)`` on an open descriptor:
the kernel drops it when the holder exits or crashes, so a dead run never blocks the next one. The
file records the holder (pid, host, start time, command line): a refused run's error names it, and a
file found on acquiring (its holder died without releasing) is reported as stale in ``JobLock.stale``,
with whether that pid still runs. A child process that inherited the descriptor keeps the lock alive
after its parent died; the error then says the recorded pid is gone. Release unlinks the file while
still holding the lock; an acquirer re-checks the inode after locking, so it never holds an unlinked
file (the usual flock-and-unlink race).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

LOCK_DIR = "locks"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LockHeldError(RuntimeError):
    """Another process holds the job lock; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def current(cls) -> Holder:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), now, " ".join(sys.argv))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), str(d["started"]), str(d["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool | None:
        """Whether the pid still runs (None: recorded on another host, cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def describe(self) -> str:
        state = {True: "running", False: "no longer running", None: "on another host"}[self.alive()]
        return f"pid {self.pid} on {self.host} ({state}), started {self.started}, command: {self.command}"


class JobLock:
    """``with JobLock(workdir, cfg.name): ...`` — raises :class:`LockHeldError` when held elsewhere."""

    def __init__(self, workdir: str | Path, name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"job lock: config name '{name}' must match {_NAME.pattern} (it names the lock file)")
        self.name = name
        self.path = Path(workdir) / LOCK_DIR / f"{name}.lock"
        self.stale: Holder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> JobLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this JobLock is already held by this process")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = Holder.parse(_read(fd))
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise OSError(e.errno, f"{self.path}: cannot lock ({e.strerror})") from e
                who = holder.describe() if holder else "a process that has not written its details yet"
                if holder is not None and holder.alive() is False:
                    who += "; a child process it started may still hold the lock"
                raise LockHeldError(f"{self.path}: job '{self.name}' is already running, held by {who}") from e
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released (unlinked) it between our open and flock: retry
        self.stale = Holder.parse(_read(fd))
        me = json.dumps(asdict(Holder.current())).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read(fd: int) -> str:
    return os.pread(fd, 65536, 0).decode(errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
