"""SIGTERM and SIGHUP end a run the way Ctrl-C does, with its clean-up.

By default Python dies on SIGTERM (CI cancelling a job, ``systemctl stop``, ``kill``) and on SIGHUP
(the SSH session of the deploy dropped) without running any clean-up: the build kept running in its
own session, a preflight server stayed up, and an activation stopped half-way left an unverified
release serving until the next run repaired it. With these handlers both raise ``Interrupted`` (a
KeyboardInterrupt), so every ``except BaseException``/``finally`` that handles Ctrl-C handles them too,
and the activation puts the previous release back before the command exits.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
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
