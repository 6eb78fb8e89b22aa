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
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

from nextdeploy.core.steps import StepName, tagged

if TYPE_CHECKING:
    from rich.console import Console


class _Outcome(Protocol):
    @property
    def ok(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=_Outcome)


@dataclass
class StepHandle:
    """What a running step may say about itself: a step whose command failed ends FAILED even when the
    error is raised only after the step (the caller first looks at the log, hands on dependencies...)."""

    failed: bool = False

    def check(self, outcome: OutcomeT) -> OutcomeT:
        """Mark the step failed unless ``outcome.ok``; returns ``outcome``."""
        if not outcome.ok:
            self.failed = True
        return outcome


@dataclass
class StepTiming:
    title: str
    name: StepName | None
    seconds: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name.value if self.name else None, "title": self.title,
                "seconds": round(self.seconds, 3), "ok": self.ok}


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
    def step(self, title: str, name: StepName | None = None) -> Iterator[StepHandle]:
        """Run a step: shows ``title`` while running, then its outcome and duration. It failed if it raised,
        or if the block marked it failed through the handle it gets. ``name`` is its stable name
        (``nextdeploy.core.steps``): with ``--json`` each progress line carries it (``... [name] title``), and so
        does ``timings``."""
        started = time.monotonic()
        # Tagged only with --json (progress on stderr, read by scripts and the bench); a person reads titles.
        shown = tagged(name, title) if self.json_mode else title
        ok = False
        handle = StepHandle()
        try:
            if self.rich:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
                with Progress(*columns, console=self.console, transient=True) as progress:
                    progress.add_task(title, total=None)
                    yield handle
            else:
                self._line(f"... {shown}")
                yield handle
            ok = not handle.failed
        finally:
            seconds = time.monotonic() - started
            self.timings.append(StepTiming(title, name, seconds, ok))
            mark = ("[green]✓[/]" if ok else "[red]✗[/]") if self.rich else ("ok " if ok else "FAILED")
            if self.rich:
                from rich.markup import escape

                self.console.print(f"{mark} {escape(title)} [dim]({seconds:.1f} s)[/]")
            else:
                self._line(f"{mark} {shown} ({seconds:.1f} s)")

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

    def steps_json(self) -> list[dict[str, Any]]:
        """The steps run so far, in the order they ended: name, title, seconds, ok."""
        return [timing.to_json() for timing in self.timings]
