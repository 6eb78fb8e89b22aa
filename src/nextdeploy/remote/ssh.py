"""The SSH transport: run a command on a host, or rsync a tree to it, with the system OpenSSH client.

One ``SshTransport`` per run. It keeps the shared connections' sockets in a private dir of its own (0700,
short path: a unix socket path is limited to about 100 bytes) and closes every connection it opened on
``close()``. Secrets go over stdin, never on a command line, where they would show in the host's process
list. ssh's own failures (exit 255 with no live connection to the host) raise an ``SshError`` that
names the host and the fix; every other exit code is the remote command's, returned to the caller.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nextdeploy.core.errors import DiskFullError
from nextdeploy.remote.argv import (
    Destination,
    RsyncStats,
    SshSettings,
    control_argv,
    parse_destination,
    parse_rsync_stats,
    remote_command,
    rsync_argv,
    rsync_pull_argv,
    ssh_argv,
)
from nextdeploy.remote.errors import (
    RemoteTimeoutError,
    SshError,
    classify_ssh_failure,
    last_line,
    unrecognised_ssh_failure,
)

SSH_FAILED = 255  # ssh's exit code for its own failures
# What a Ctrl-C at the terminal or a cancelled CI job sends to the controller's process group.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@dataclass(frozen=True)
class RemoteResult:
    """What a command did on a host."""

    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode(errors="replace")


class SshTransport:
    """Runs commands and rsyncs on hosts over ssh, one shared connection per host."""

    def __init__(self, settings: SshSettings | None = None) -> None:
        self.settings = settings or SshSettings()
        # Mode 0700. In /tmp rather than $TMPDIR, which can be long (macOS: /var/folders/...): a socket's
        # path must fit in about 100 bytes, and ssh's %C alone takes 40.
        self.control_dir = Path(tempfile.mkdtemp(prefix="nd-ssh-", dir="/tmp" if Path("/tmp").is_dir() else None))
        self._opened: dict[str, Destination] = {}
        self._connected: set[str] = set()  # hosts whose shared connection this transport opened
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def destination(self, host: str) -> Destination:
        """The parsed destination of ``host`` (an alias or ``[user@]host[:port]``), remembered for ``close``."""
        with self._lock:
            if host not in self._opened:
                self._opened[host] = parse_destination(host)
            return self._opened[host]

    def run(self, host: str, argv: Sequence[str], *, stdin: bytes | None = None,
            timeout: float | None = None) -> RemoteResult:
        """Run ``argv`` on ``host``; ``stdin`` is sent to it (the way to pass a secret). Raises an
        ``SshError`` when ssh itself failed; returns the remote command's exit code and output otherwise."""
        self.connect(host, timeout)
        return self._run(host, argv, stdin, timeout)

    def connect(self, host: str, timeout: float | None = None) -> None:
        """Open the shared connection to ``host`` unless this transport already did: raises ``SshError`` if
        it cannot. Threads wait for the first one, so that they share its connection rather than each
        open one (``ControlMaster=auto`` lets every ssh that finds no master yet become one)."""
        with self._lock:
            host_lock = self._host_locks.setdefault(host, threading.Lock())
        if host in self._connected:
            return
        with host_lock:
            if host not in self._connected:
                result = self._run(host, ["true"], None, timeout)
                if not result.ok:
                    raise unrecognised_ssh_failure(host, result.error_text)
                self._connected.add(host)

    def _run(self, host: str, argv: Sequence[str], stdin: bytes | None, timeout: float | None) -> RemoteResult:
        command = ssh_argv(self.settings, self.control_dir, self.destination(host), argv)
        done = self._execute(host, command, stdin, timeout, f"`{remote_command(argv)}` on {host}")
        return self.result_of(host, argv, done.returncode, done.stdout, done.stderr)

    def result_of(self, host: str, argv: Sequence[str], exit_code: int, stdout: bytes, stderr: bytes) -> RemoteResult:
        """What ``argv`` did on ``host`` once its ssh exited ``exit_code``; raises ``SshError`` when ssh failed."""
        # 255 is ssh's own failure, unless the connection is up: then the remote command exited 255 (and
        # what it printed, "Connection refused" from a curl maybe, is its own business).
        if exit_code == SSH_FAILED:
            self._raise_if_disconnected(host, stderr)
        return RemoteResult(host, tuple(argv), exit_code, stdout, stderr)

    def start(self, host: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` and return at once: its stdin, stdout and stderr are pipes, to talk with
        it while it runs (``fleet.hostcall.GatedCall``); ``result_of`` judges its end. In a session of its own,
        as every ssh here (see ``_execute``). Raises ``SshError`` if the shared connection cannot be opened."""
        self.connect(host)
        command = ssh_argv(self.settings, self.control_dir, self.destination(host), argv)
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def connected(self, host: str) -> bool:
        """Whether a shared connection to ``host`` is up (``ssh -O check``)."""
        command = control_argv(self.settings, self.control_dir, self.destination(host), "check")
        try:
            return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:  # a master that does not answer is as good as none
            return False

    def rsync(self, host: str, source: Path, target: str, *, link_dest: str | None = None,
              checksum: bool = True, delete: bool = False, timeout: float | None = None,
              options: Sequence[str] = ()) -> RsyncStats:
        """Copy the tree ``source`` into the dir ``target`` on ``host`` (created if missing), as a delta
        against ``link_dest`` there (identical files become hard links). Returns rsync's figures."""
        made = self.run(host, ["mkdir", "-p", "--", target], timeout=timeout)  # rsync makes only the last dir
        if not made.ok:
            raise SshError(host, f"cannot create {target} on {host}: {last_line(made.error_text)}",
                           hint=f"check the permissions of its parent dirs on {host}")
        command = rsync_argv(self.settings, self.control_dir, self.destination(host), source, target,
                             link_dest=link_dest, checksum=checksum, delete=delete, options=options)
        return self._rsync(host, command, f"copying {source} to {host}:{target}", f"the disk of {host}",
                           f"free space on {host}", timeout)

    def pull(self, host: str, source: str, target: Path, *, timeout: float | None = None,
             options: Sequence[str] = ()) -> RsyncStats:
        """Copy the dir ``source`` on ``host`` into the tree ``target`` here (created if missing), by
        checksum; ``options`` such as ``--link-dest`` dirs here. Returns rsync's figures."""
        self.connect(host, timeout)
        target.mkdir(parents=True, exist_ok=True)
        command = rsync_pull_argv(self.settings, self.control_dir, self.destination(host), source, target,
                                  options=options)
        return self._rsync(host, command, f"copying {host}:{source} to {target}", "the disk here",
                           f"free space on the disk of {target}", timeout)

    def _rsync(self, host: str, command: list[str], what: str, disk: str, free: str,
               timeout: float | None) -> RsyncStats:
        # The C locale: figures with plain separators. Not for ssh: with SendEnv LC_* (Debian's default)
        # it would reach the remote commands.
        done = self._execute(host, command, None, timeout, what, env={**os.environ, "LC_ALL": "C"})
        if done.returncode != 0:
            self._raise_if_disconnected(host, done.stderr)  # the connection failed, not rsync
            said = done.stderr.decode(errors="replace")
            if "No space left on device" in said or "Disk quota exceeded" in said:
                raise DiskFullError(f"{disk} is full ({what})", hint=f"{free}, then run the command again")
            raise SshError(host, f"{what} failed (rsync exit {done.returncode}): {last_line(said)}",
                           hint=f"fix what rsync says; `rsync --version` must work on {host} too")
        return parse_rsync_stats(done.stdout.decode(errors="replace"))

    def _execute(self, host: str, command: list[str], stdin: bytes | None, timeout: float | None,
                 what: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ssh or rsync here; ``what`` it does names it in the error if it runs out of time. In a session
        of its own: a Ctrl-C at the terminal (or a signal to the controller's process group) reaches the
        controller alone, which lets the host commands in flight finish and answer (``fleet.rollout``)."""
        try:
            for _ in range(2):
                done = subprocess.run(command, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                                      capture_output=True, timeout=timeout, env=env, start_new_session=True)
                if not stopped_before_it_ran(done):
                    break
            return done
        except subprocess.TimeoutExpired:
            raise RemoteTimeoutError(
                host, f"{what} did not finish within {timeout:g} s",
                hint=f"check what keeps {host} busy (or the network to it), then run the command again",
            ) from None

    def _raise_if_disconnected(self, host: str, stderr: bytes) -> None:
        """After a failure: if no connection to ``host`` is up, ssh failed; say why."""
        if not self.connected(host):
            self._connected.discard(host)
            said = stderr.decode(errors="replace")
            raise classify_ssh_failure(host, said) or unrecognised_ssh_failure(host, said)

    def close(self) -> None:
        """Close every shared connection this transport opened, and remove its socket dir."""
        with self._lock:
            destinations = list(self._opened.values())
            self._opened.clear()
            self._connected.clear()
        for destination in destinations:
            try:
                subprocess.run(control_argv(self.settings, self.control_dir, destination, "exit"),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                pass  # a master that does not answer ends at ControlPersist on its own

        shutil.rmtree(self.control_dir, ignore_errors=True)


def stopped_before_it_ran(done: subprocess.CompletedProcess[bytes]) -> bool:
    """Whether ssh or rsync was killed by a stop signal before it said anything: a signal sent to the
    controller's process group (Ctrl-C at the terminal, a CI job cancelled) that reached the child in the
    instant between its start and its own session (CPython's child resets its signal handlers to the
    defaults before it calls setsid). It never ran its command then (once in its own session, such a
    signal cannot reach it), so ``_execute`` runs it again: the controller alone handles the signal."""
    return done.returncode < 0 and -done.returncode in STOP_SIGNALS and not done.stdout and not done.stderr

