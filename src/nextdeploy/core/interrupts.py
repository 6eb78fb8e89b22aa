"""SIGTERM and SIGHUP end a run the way Ctrl-C does, with its clean-up.

By default Python dies on SIGTERM (CI cancelling a job, ``systemctl stop``, ``kill``) and on SIGHUP
(the SSH session of the deploy dropped) without running any clean-up: the build kept running in its
own session, a preflight server stayed up, and an activation stopped half-way left an unverified
release serving until the next run repaired it. With these handlers both raise ``Interrupted`` (a
KeyboardInterrupt), so every ``except BaseException``/``finally`` that handles Ctrl-C handles them too,
and the activation puts the previous release back before the command exits.

A fleet rollout cannot stop at any bytecode: hosts are switching in other threads, and those that switched
must be put back. Under ``deferred()`` the stop signals are only recorded; the rollout looks at them between
its steps, lets the host calls in flight finish, puts the switched hosts back, then raises ``Interrupted``
itself (``fleet.rollout``).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from nextdeploy.core.errors import Interrupted

# The signals that stop a run. SIGINT already raises KeyboardInterrupt (Python's own handler).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def install() -> None:
    """Make SIGTERM and SIGHUP raise Interrupted in the main thread. A signal the caller set to be
    ignored (``nohup`` ignores SIGHUP) stays ignored."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise_interrupted)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGHUP:
        _detach_from_hung_up_terminal()
    raise Interrupted(signal.Signals(signum).name)


def _detach_from_hung_up_terminal() -> None:
    """After a hang-up, writes to the terminal fail (EIO) and would break the clean-up half-way: send
    them to /dev/null. Output to a file or pipe is kept. What happened is in the release log. (A hung-up
    terminal is no longer a tty to ``isatty``, whose ioctl then fails: it is still a character device.)"""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stat.S_ISCHR(os.fstat(stream.fileno()).st_mode):
                    os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass  # already closed, or not a real file
    finally:
        os.close(devnull)


@dataclass
class Stops:
    """The stop signals received under ``deferred()``, in order (their names: ``SIGINT``...)."""

    signals: list[str] = field(default_factory=list)
    said: int = 0  # how many of them the caller has told the user about

    @property
    def first(self) -> str | None:
        return self.signals[0] if self.signals else None


@contextmanager
def deferred() -> Iterator[Stops]:
    """Within the body, SIGINT, SIGTERM and SIGHUP are recorded in the ``Stops`` it yields instead of raised:
    the caller looks at them when it can act on them. The previous handlers come back at the end (a signal
    recorded is not raised again: the caller acts on ``Stops``). A signal set to be ignored stays ignored.
    Outside the main thread, where no signal can be handled, nothing is deferred."""
    stops = Stops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return

    def record(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _detach_from_hung_up_terminal()
        stops.signals.append(signal.Signals(signum).name)  # printing here could re-enter a print

    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    ours = {signum: handler for signum, handler in saved.items()
            if handler is not None and handler is not signal.SIG_IGN}  # None: set outside Python, left alone
    for signum in ours:
        signal.signal(signum, record)
    try:
        yield stops
    finally:
        for signum, handler in ours.items():
            signal.signal(signum, handler)
