"""Helpers for tests that check which processes a run leaves behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path


def gone_soon(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` stops running within ``timeout`` s (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def as_in_a_terminal() -> None:
    """preexec_fn: Ctrl-C and hang-up as a terminal's foreground process has them. A job started in the
    background by a non-interactive shell inherits SIGINT ignored, one under ``nohup`` SIGHUP: the run
    under test would ignore them too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
