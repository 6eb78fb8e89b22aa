"""Output: progress of named steps with elapsed time, plain lines when not on a terminal, JSON for scripts.

Three modes, chosen once per command:
- rich:  a terminal without NO_COLOR: a spinner with elapsed time per running step;
- plain: NO_COLOR or stdout not a terminal: one line per step start and end;
- json:  ``--json``: progress goes to stderr as plain lines, stdout carries only the JSON result.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class StepTiming:
    name: str
    seconds: float
    ok: bool


@dataclass
class Reporter:
    json_mode: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    err_stream: TextIO = field(default_factory=lambda: sys.stderr)
    force_plain: bool = False
    timings: list[StepTiming] = field(default_factory=list)

    def __post_init__(self) -> None:
        progress_stream = self.err_stream if self.json_mode else self.stream
        self.rich = (
            not self.force_plain
            and not self.json_mode
            and "NO_COLOR" not in os.environ
            and progress_stream.isatty()
        )
        self._out = progress_stream

    @cached_property
    def console(self) -> Console:
        # rich is imported on first use: off a terminal a deploy prints plain lines and never needs it
        # (its ~50 modules are a tenth of the command's start-up).
        from rich.console import Console

        # Off a terminal, a wide fixed width keeps tables (release ids) from being cut.
        return Console(file=self._out, highlight=False, no_color="NO_COLOR" in os.environ,
                       force_terminal=self.rich or None, width=None if self.rich else 160)

    # Progress -------------------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """Run a named step: shows it while running, then its outcome and duration."""
        started = time.monotonic()
        ok = False
        try:
            if self.rich:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
                with Progress(*columns, console=self.console, transient=True) as progress:
                    progress.add_task(title, total=None)
                    yield
            else:
                self._line(f"... {title}")
                yield
            ok = True
        finally:
            seconds = time.monotonic() - started
            self.timings.append(StepTiming(title, seconds, ok))
            mark = ("[green]✓[/]" if ok else "[red]✗[/]") if self.rich else ("ok " if ok else "FAILED")
            if self.rich:
                from rich.markup import escape

                self.console.print(f"{mark} {escape(title)} [dim]({seconds:.1f} s)[/]")
            else:
                self._line(f"{mark} {title} ({seconds:.1f} s)")

    def info(self, message: str) -> None:
        if self.rich:
            self.console.print(message, markup=False)
        else:
            self._line(message)

    def warn(self, message: str) -> None:
        if self.rich:
            from rich.markup import escape

            self.console.print(f"[yellow]warning:[/] {escape(message)}")  # a path may hold "[/]"
        else:
            self._line(f"warning: {message}")

    def _line(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    # Results --------------------------------------------------------------------------------------

    def result(self, data: Any) -> None:
        """The machine-readable result of a command (only printed in JSON mode)."""
        if self.json_mode:
            print(json.dumps(data, indent=2, sort_keys=True, default=str), file=self.stream, flush=True)

    def step_seconds(self, title: str) -> float | None:
        for timing in reversed(self.timings):
            if timing.name == title:
                return timing.seconds
        return None
