"""Helpers for tests that check which processes a run leaves behind."""

from __future__ import annotations

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
