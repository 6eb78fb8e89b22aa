"""The fleet lock: one deploy or rollback of a fleet at a time, even from two controllers.

Each host keeps ``<root>/.fleet.lock`` (beside its own ``.lock``, which the host's ``host activate`` takes):
``nextdeploy host lock --root ROOT --holder TEXT`` takes an exclusive ``flock`` on it, writes who holds it,
answers one JSON line, and keeps the lock while its stdin stays open. It needs no config on the host: the
lock is the first thing a controller takes (right after setting the host up), before it sends its config,
so a controller refused by the lock has changed nothing on any host. The controller runs it over ssh, one session per
host, and keeps that session's stdin open for as long as it works on the fleet. When the controller goes
away in any way (it ends, is SIGKILLed, its laptop sleeps until the connection dies, its CI job is
cancelled), the pipe closes, the host sees end of file (or its sshd ends the session) and the kernel drops
the flock: no lock outlives its holder, and nobody has to guess whether a holder is still alive.

The first host (config order) is locked alone, so of two controllers at once the one that takes it wins
and the other is refused there, holding nothing, with the holder named (exit 12); the winner then locks
the other hosts all at once; with ``--lock-timeout S``
it tries again every second for up to S seconds, saying who holds it, before that.

A deploy that builds on a build box (``[build] host`` not one of the hosts) locks the box too, in its
``[build] root``, with the other hosts: the box gets the config and the source before it builds, so two
fleets sharing a box and its root must not deploy at once (its own build lock alone would let the
second overwrite the first's source mid-build, and then refuse it only at its build).
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from nextdeploy.core.errors import ExitCode, HostFailedError, LockError
from nextdeploy.fleet.parallel import on_every_host
from nextdeploy.host.lock import DeployLock

if TYPE_CHECKING:
    from nextdeploy.fleet.session import FleetSession

# The controller's side imports hostcall and the ssh transport where it uses them: `nextdeploy host lock`
# runs the host's side alone, and loads neither them nor (through them) the config's models.

T = TypeVar("T")

LOCK_NAME = ".fleet.lock"
ANSWER_SECONDS = 60.0  # a host that does not answer the lock request within this is treated as failed
RELEASE_SECONDS = 30.0
POLL_SECONDS = 1.0  # with --lock-timeout: how often a locked fleet is tried again (one ssh session per host)


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
    facts: dict[str, Any] | None = None  # `host lock --facts`: the host's facts (``fleet.facts.collect``)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "holder": self.holder, **({} if self.facts is None else {"facts": self.facts})}


def take_host_lock(root: Path, host: str | None, holder: str) -> tuple[DeployLock, HostLockResult]:
    """Take this host's fleet lock (under ``root``) for ``holder`` at once, or raise LockError naming who
    holds it."""
    lock = DeployLock(fleet_lock_path(root), holder, timeout=0.0)
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


class NotSetUp(Exception):
    """A host asked for its lock and facts has no nextdeploy of this version and code (or no pm2): it must be
    set up first. Caught by the deploy (``fleet.deploy``), which then sets the hosts up and locks them."""


class HeldHostLock:
    """One host's lock, held by the ssh session ``process`` (its stdin open)."""

    def __init__(self, host: str, process: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.process = process
        self.facts: dict[str, Any] | None = None  # what the host answered with the lock, when asked

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


def lock_argv(root: str, host: str, holder: str, facts: bool = False) -> list[str]:
    """``nextdeploy host lock`` as the host runs it: by its root, with no config (none is sent before the
    lock is held: a controller refused by the lock must change nothing on the host). With ``facts``: run only
    by a nextdeploy of this version and code there (else exit ``setup.NOT_INSTALLED``), answering its facts."""
    from nextdeploy.fleet import hostcall
    from nextdeploy.fleet.setup import installed_argv

    args = ["host", "lock", "--root", root, "--as", host, "--holder", holder]
    return installed_argv(root, *args, "--facts") if facts else [hostcall.host_binary(root), *args]


def lock_host(session: FleetSession, host: str, holder: str, facts: bool = False,
              root: str | None = None) -> HeldHostLock:
    """Take ``host``'s fleet lock (under its root, or ``root``: a build box's) through an ssh session kept
    open; LockError if another holds it. With ``facts``, the host's facts come with it
    (``HeldHostLock.facts``), or NotSetUp when it is not set up."""
    from nextdeploy.fleet import hostcall
    from nextdeploy.fleet.setup import NOT_INSTALLED, is_set_up
    from nextdeploy.remote.argv import ssh_argv
    from nextdeploy.remote.ssh import RemoteResult

    transport = session.transport
    transport.connect(host)
    argv = ssh_argv(transport.settings, transport.control_dir, transport.destination(host),
                    lock_argv(root or session.roots[host], host, holder, facts))
    with tempfile.TemporaryFile() as errors:
        # In a session of its own: a Ctrl-C at the terminal must not end the session (and so the lock) while
        # the interrupted controller still puts hosts back. When the controller dies, its stdin closes anyway.
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                   start_new_session=True)
        assert process.stdout is not None
        timer = threading.Timer(ANSWER_SECONDS, process.kill)  # no answer in time: no lock, an error below
        timer.start()
        try:
            line = process.stdout.readline()
        finally:
            timer.cancel()
        held = HeldHostLock(host, process)
        if facts and not line and process.wait() == NOT_INSTALLED:
            held.release()
            raise NotSetUp(host)
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
    if facts:
        held.facts = answer.get("facts")
        if not isinstance(held.facts, dict) or not is_set_up(held.facts):  # e.g. pm2 gone since
            held.release()
            raise NotSetUp(host)
    return held


def _read(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def lock_every_host(session: FleetSession, holder: str, take: Callable[[str], HeldHostLock] | None = None,
                    machines: Mapping[str, str] | None = None) -> ExitStack:
    """Every host's fleet lock (or every machine's of ``machines``: the hosts and a build box, each by its
    root), in an ExitStack that releases them (the last host's first). The first host's (config order) is
    taken alone: of controllers that start at once only the one that holds it goes on, so the others' are
    then taken all at once (``take(host)``, default ``lock_host``). If a host is locked by another
    controller (or cannot be locked), every lock taken is released and the first error (config order)
    raised: LockError (exit 12) naming the holder."""
    take = take or (lambda host: lock_host(session, host, holder, root=(machines or session.roots)[host]))
    first, *others = session.names if machines is None else list(machines)
    with ExitStack() as held:
        held.callback(take(first).release)
        taken: dict[str, HeldHostLock] = {}

        def one(host: str) -> None:
            taken[host] = take(host)

        try:
            outcomes = on_every_host(others, lambda host: _outcome(one, host))
        finally:
            for host in others:  # released in reverse order: the first host's lock goes last
                if host in taken:
                    held.callback(taken[host].release)
        for error in outcomes:
            if error is not None:
                raise error
        return held.pop_all()


def _outcome(work: Callable[[str], None], host: str) -> BaseException | None:
    """``work(host)``; what it raised (returned, not raised: every host's lock is accounted for first)."""
    try:
        work(host)
    except BaseException as error:  # handed to the caller, which raises it
        return error
    return None


def waiting(take: Callable[[], T], timeout: float, say: Callable[[str], None], *,
            clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
            poll: float = POLL_SECONDS) -> T:
    """``take()``, tried again every ``poll`` seconds while it raises LockError, for up to ``timeout``
    seconds (``--lock-timeout``); each new holder is said once. The last LockError is raised when the time
    is up (at once when ``timeout`` is 0)."""
    deadline = clock() + timeout
    said = None
    while True:
        try:
            return take()
        except LockError as refused:
            left = deadline - clock()
            if left <= 0:
                if timeout > 0:
                    refused.message = f"{refused.message} (waited {timeout:g} s)"
                raise
            if refused.message != said:
                say(f"{refused.message}: waiting for it (at most {timeout:g} s in all, {left:.0f} s left)")
                said = refused.message
            sleep(min(poll, left))


@contextmanager
def fleet_lock(session: FleetSession, command: str | None = None, timeout: float = 0.0,
               facts: dict[str, dict[str, Any]] | None = None,
               machines: Mapping[str, str] | None = None) -> Iterator[None]:
    """Hold every host's fleet lock (``lock_every_host``: the first host's, then the others' at once; with
    ``machines``, a build box's too, each by its root) for the body. If a host is locked by another
    controller (or cannot be locked), the locks taken so far are released; with ``timeout`` (seconds,
    ``--lock-timeout``) it is tried again until then, saying who holds it; then the error is raised:
    LockError (exit 12) naming the holder. With ``facts`` (a dict), each machine answers its facts with its
    lock, put there by name; a machine not set up raises NotSetUp (no lock held)."""
    holder = holder_text(command or (sys.argv[1] if len(sys.argv) > 1 else "deploy"))

    def take(host: str) -> HeldHostLock:
        held = lock_host(session, host, holder, facts is not None, root=(machines or session.roots)[host])
        if facts is not None and held.facts is not None:
            facts[host] = held.facts
        return held

    with waiting(lambda: lock_every_host(session, holder, take, machines), timeout, session.reporter.info):
        yield
