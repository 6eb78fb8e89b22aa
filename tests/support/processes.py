"""Helpers for tests about processes: which ones a run leaves behind, a port held by a stranger."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def gone_soon(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` stops running within ``timeout`` s (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if zombie(pid):
            return True
        time.sleep(0.05)
    return False


def zombie(pid: int) -> bool:
    """Whether ``pid`` is dead: gone, or a zombie waiting for its parent (or init) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def as_in_a_terminal() -> None:
    """preexec_fn: Ctrl-C and hang-up as a terminal's foreground process has them. A job started in the
    background by a non-interactive shell inherits SIGINT ignored, one under ``nohup`` SIGHUP: the run
    under test would ignore them too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@contextmanager
def port_held_elsewhere(port: int, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[bytes]]:
    """Another process (not ours, not PM2) listening on ``host:port`` for the duration of the block."""
    family = "AF_INET6" if ":" in host else "AF_INET"
    # SO_REUSEADDR as every server sets it: the app's closed connections in TIME_WAIT do not block it.
    code = (f"import socket, time\ns = socket.socket(socket.{family})\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(({host!r}, {port}))\ns.listen()\nprint('listening', flush=True)\ntime.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"listening\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
