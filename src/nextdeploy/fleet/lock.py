"""The fleet lock: one deploy or rollback of a fleet at a time, even from two controllers.

Each host keeps ``<root>/.fleet.lock`` (beside its own ``.lock``, which the host's ``host activate`` takes):
``nextdeploy host lock --holder TEXT`` takes an exclusive ``flock`` on it, writes who holds it, answers one
JSON line, and keeps the lock while its stdin stays open. The controller runs it over ssh, one session per
host, and keeps that session's stdin open for as long as it works on the fleet. When the controller goes
away in any way (it ends, is SIGKILLed, its laptop sleeps until the connection dies, its CI job is
cancelled), the pipe closes, the host sees end of file (or its sshd ends the session) and the kernel drops
the flock: no lock outlives its holder, and nobody has to guess whether a holder is still alive.

Hosts are locked in config order, so of two controllers at once the one that takes the first host wins
and the other is refused there, holding nothing, with the holder named (exit 12).
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nextdeploy.core.errors import ExitCode, HostFailedError, LockError
from nextdeploy.fleet import hostcall
from nextdeploy.host.lock import DeployLock
from nextdeploy.remote.argv import ssh_argv
from nextdeploy.remote.ssh import RemoteResult

if TYPE_CHECKING:
    from nextdeploy.core.context import Context
    from nextdeploy.fleet.session import FleetSession

LOCK_NAME = ".fleet.lock"
ANSWER_SECONDS = 60.0  # a host that does not answer the lock request within this is treated as failed
RELEASE_SECONDS = 30.0


def fleet_lock_path(root: Path) -> Path:
    return root / LOCK_NAME


def holder_text(command: str) -> str:
    """Who asks for the lock, as the refused controller will read it: command, user, machine, pid."""
    return f"`nextdeploy {command}` by {getpass.getuser()} on {socket.gethostname()} (pid {os.getpid()})"


# --- the host's side: `nextdeploy host lock` ------------------------------------------------------------


@dataclass(frozen=True)
class HostLockResult:
    path: str
    holder: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "holder": self.holder}


def take_host_lock(ctx: Context, host: str | None, holder: str) -> tuple[DeployLock, HostLockResult]:
    """Take this host's fleet lock for ``holder`` at once, or raise LockError naming who holds it."""
    lock = DeployLock(fleet_lock_path(ctx.paths.root), holder, timeout=0.0)
    try:
        lock.acquire()
    except LockError:
        owner = lock.holder()
        who = f"{owner.command}, since {owner.started_at}" if owner else "another controller"
        where = f" on {host}" if host else ""
        raise LockError(f"the fleet is locked{where} by {who}",
                        hint="wait for it to finish, then run the command again") from None
    return lock, HostLockResult(str(lock.path), holder)


def hold_until_stdin_closes(lock: DeployLock, stdin: IO[bytes] | None = None) -> None:
    """Keep ``lock`` until end of file on stdin (the controller's ssh session went away), then release it."""
    stream = stdin or sys.stdin.buffer
    try:
        while stream.read(4096):
            pass
    finally:
        lock.release()


# --- the controller's side ------------------------------------------------------------------------------


class HeldHostLock:
    """One host's lock, held by the ssh session ``process`` (its stdin open)."""

    def __init__(self, host: str, process: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.process = process

    def release(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=RELEASE_SECONDS)
        except subprocess.TimeoutExpired:  # the host's side ends on its own when ssh goes away
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def lock_host(session: FleetSession, host: str, holder: str) -> HeldHostLock:
    """Take ``host``'s fleet lock through an ssh session kept open; LockError if another holds it."""
    transport = session.transport
    transport.connect(host)
    argv = ssh_argv(transport.settings, transport.control_dir, transport.destination(host),
                    hostcall.host_argv(session.roots[host], host, ["lock", "--holder", holder]))
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        timer = threading.Timer(ANSWER_SECONDS, process.kill)  # no answer in time: no lock, an error below
        timer.start()
        try:
            line = process.stdout.readline()
        finally:
            timer.cancel()
        held = HeldHostLock(host, process)
        try:
            answer = hostcall.answer_of(host, "lock", RemoteResult(host, tuple(argv), 0 if line else 1, line,
                                                                   _read(errors)))
        except HostFailedError as failed:
            held.release()
            if failed.exit_code == ExitCode.LOCKED:
                raise LockError(failed.message.removeprefix(f"{host} failed at lock: "), hint=failed.hint) from None
            raise
        except BaseException:
            held.release()
            raise
    if answer.get("holder") != holder:  # pragma: no cover - the host answers what it was given
        held.release()
        raise LockError(f"{host} answered the fleet lock for someone else", hint="run the command again")
    return held


def _read(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


@contextmanager
def fleet_lock(session: FleetSession, command: str | None = None) -> Iterator[None]:
    """Hold every host's fleet lock, taken in config order, for the body. If a host is locked by another
    controller (or cannot be locked), the locks taken so far are released and the error raised: LockError
    (exit 12) naming the holder."""
    holder = holder_text(command or (sys.argv[1] if len(sys.argv) > 1 else "deploy"))
    with ExitStack() as held:
        for host in session.names:
            lock = lock_host(session, host, holder)
            held.callback(lock.release)
        yield
