"""One deploy or rollback at a time per deploy root.

An exclusive ``flock`` on ``<root>/.lock``: atomic, and released by the kernel when its holder dies,
even by SIGKILL, so a lock left by a killed deploy is taken over without guessing and a live
holder's lock can never be removed by someone else. The file holds the owner's details (pid, host,
user, start time, command) so a waiting or failing run can name the holder.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from nextdeploy.core.errors import HostPathError, LockError
from nextdeploy.core.releaselog import now_iso
from nextdeploy.host.procs import pid_exists

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    user: str
    started_at: str
    command: str

    @classmethod
    def current(cls, command: str) -> LockOwner:
        return cls(os.getpid(), socket.gethostname(), getpass.getuser(), now_iso(), command)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (user {self.user}, since {self.started_at}, `{self.command}`)"


def _parse_owner(text: str) -> LockOwner | None:
    try:
        data: dict[str, Any] = json.loads(text)
        return LockOwner(int(data["pid"]), str(data["host"]), str(data["user"]), str(data["started_at"]),
                         str(data["command"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class DeployLock:
    """``with DeployLock(path, "deploy", timeout=0):`` — raises LockError if another run holds it."""

    def __init__(self, path: Path, command: str, timeout: float = 0.0) -> None:
        self.path = path
        self.command = command
        self.timeout = timeout
        self.taken_over: LockOwner | None = None  # a dead run's lock we replaced
        self._fd: int | None = None

    def holder(self) -> LockOwner | None:
        try:
            return _parse_owner(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None

    def running_holder(self) -> LockOwner | None:
        """Who holds the lock now, if anyone: details left by a holder that died do not count. Read without
        touching the flock (a test lock taken here could make a deploy starting that instant fail)."""
        holder = self.holder()
        if holder is None or holder.host != socket.gethostname() or not pid_exists(holder.pid):
            return None
        return holder

    def acquire(self) -> None:
        try:
            # os.open is close-on-exec by default: PM2's daemon, spawned by us, must never inherit the lock.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HostPathError(f"cannot open the lock file {self.path}: {exc.strerror}",
                                hint="make the deploy root writable for this user") from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = self.holder()
                    who = holder.describe() if holder else "another process"
                    raise LockError(
                        f"another deploy holds the lock {self.path}: {who}",
                        hint="wait for it to finish, or pass --lock-timeout SECONDS to wait for it",
                    ) from None
                time.sleep(POLL_SECONDS)
        # Details left behind mean the last holder died without releasing: we are taking over.
        self.taken_over = _parse_owner(os.pread(fd, 65536, 0).decode("utf-8", errors="replace"))
        owner = json.dumps(LockOwner.current(self.command).__dict__).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner, 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DeployLock:
        if self._fd is None:  # not acquired beforehand (a deploy takes its activation's lock early)
            self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
