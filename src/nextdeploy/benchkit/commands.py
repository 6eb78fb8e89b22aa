"""Running a deploy command as a subprocess, with every stderr line time-stamped as it arrives.

Deploys run in their own process so that their Python work never competes with the load generator's
event loop for the GIL: the bench process only sends requests and reads pipes.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nextdeploy.benchkit.measure import Step, parse_steps, release_of
from nextdeploy.host.procs import kill_process_group

LineHook = Callable[[float, str], None]


@dataclass
class CommandRecord:
    """One finished command: its argv, timing, exit code, stdout and time-stamped stderr lines."""

    argv: list[str]
    started: float  # time.monotonic()
    ended: float
    exit_code: int
    stdout: str = ""
    lines: list[tuple[float, str]] = field(default_factory=list)
    timed_out: bool = False

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def steps(self) -> list[Step]:
        return parse_steps(self.lines)

    @property
    def release(self) -> str | None:
        return release_of(self.lines)

    def error_line(self) -> str | None:
        """The ``error: ...`` line a failed nextdeploy command printed, if any."""
        for _, line in reversed(self.lines):
            if line.startswith("error:"):
                return line
        return None


def run_command(argv: Sequence[str], env: dict[str, str], timeout: float, on_line: LineHook | None = None,
                cwd: Path | None = None, echo: Callable[[str], None] | None = None,
                on_start: Callable[[int], None] | None = None) -> CommandRecord:
    """Run ``argv`` to completion (killed after ``timeout`` s), stamping each stderr line on arrival;
    ``on_start`` gets the command's pid as soon as it runs (the fleet bench samples its process tree)."""
    record = CommandRecord(list(argv), time.monotonic(), 0.0, -1)
    # Own session: a timed-out command is killed with everything it spawned (except PM2's daemon,
    # which detaches itself and is stopped with `pm2 kill` by the bench's clean-up).
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        cwd=cwd, text=True, bufsize=1, start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout_parts: list[str] = []

    def read_stderr(stream: IO[str]) -> None:
        for raw in stream:
            stamp = time.monotonic()
            line = raw.rstrip("\n")
            record.lines.append((stamp, line))
            if echo is not None:
                echo(line)
            if on_line is not None:
                on_line(stamp, line)

    readers = [
        threading.Thread(target=read_stderr, args=(process.stderr,), daemon=True),
        threading.Thread(target=lambda: stdout_parts.append(process.stdout.read() if process.stdout else ""),
                         daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        if on_start is not None:
            on_start(process.pid)
        record.exit_code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        record.timed_out = True
        kill_process_group(process.pid)
        record.exit_code = process.wait()
    except BaseException:
        # The bench interrupted (Ctrl-C reaches only the bench: the command has its own session). A deploy
        # left running would go on after the clean-up's `pm2 kill`, and its next pm2 call would start a
        # daemon that nobody stops.
        kill_process_group(process.pid)
        process.wait()
        raise
    record.ended = time.monotonic()
    for reader in readers:
        reader.join(10)
    record.stdout = "".join(stdout_parts)
    return record
