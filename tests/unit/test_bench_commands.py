"""The bench's command runner: an interrupted bench leaves none of its commands running."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nextdeploy.benchkit.commands import run_command


def test_a_command_is_killed_with_everything_it_started_when_the_bench_is_interrupted(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    # The command and a child of its own, as a deploy and the `pm2` it runs.
    script = f"sleep 30 & echo $$ $! > {pid_file}; wait"
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    # Ctrl-C as a terminal's foreground process has it (a background job of a script, as a CI run may be,
    # inherits SIGINT ignored).
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_command(["sh", "-c", script], dict(os.environ), timeout=60)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, earlier)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {pids}"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
