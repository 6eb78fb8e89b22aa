"""Executors: the one place where host operations happen.

``LocalExecutor`` does them on this machine; ``DryRunExecutor`` prints them and changes nothing.
An SSH executor would implement the same ``apply``. The work itself lives beside it: files in
``host.files``, commands and processes in ``host.procs``, calls to the PM2 daemon in ``pm2.sockets``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from nextdeploy.core.errors import HostPathError
from nextdeploy.host import files, procs
from nextdeploy.host.procs import RunResult as RunResult
from nextdeploy.plans.ops import (
    CopyFile,
    CopyTree,
    DeleteWorkers,
    MakeDirs,
    MoveTree,
    Op,
    PrivateFile,
    ReloadWorkers,
    Remove,
    Rename,
    Run,
    SpawnWorkers,
    StopProcesses,
    Symlink,
    WriteFile,
)
from nextdeploy.pm2 import sockets


class Executor:
    """Carries out ops. Subclasses implement ``apply``."""

    def apply(self, op: Op) -> RunResult:
        raise NotImplementedError

    def apply_all(self, ops: Iterable[Op]) -> None:
        for op in ops:
            self.apply(op)

    def settle(self) -> list[str]:
        """Wait for what ops left running in the background (a reload's drain); returns their problems."""
        return []


class LocalExecutor(Executor):
    """Runs ops on this machine. ``echo`` shows the lines of a ``Run`` with an ``echo_prefix``."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._unsettled: list[Future[str | None]] = []
        self.echo = echo

    def settle(self) -> list[str]:
        unsettled, self._unsettled = self._unsettled, []
        return [problem for future in unsettled if (problem := future.result())]

    def apply(self, op: Op) -> RunResult:
        try:
            return self._apply(op)
        except PermissionError as exc:
            raise HostPathError(
                f"permission denied: {exc.filename or exc}",
                hint="run as the user that owns the deploy root, or fix the directory's permissions",
            ) from None

    def _apply(self, op: Op) -> RunResult:
        if isinstance(op, Run):
            return procs.run_command(op, self.echo)
        if isinstance(op, ReloadWorkers):
            problems, unsettled = sockets.reload_workers(op)
            self._unsettled += unsettled
            return _daemon_result(problems)
        if isinstance(op, SpawnWorkers):
            return _daemon_result(sockets.calls_in_background(op.socket, "duplicateProcessId",
                                                              [(pm_id,) for pm_id in op.like]))
        if isinstance(op, DeleteWorkers):
            if not op.wait:
                return _daemon_result(sockets.calls_in_background(op.socket, "deleteProcessId",
                                                                  [(pm_id,) for pm_id in op.ids]))
            return _daemon_result(sockets.delete_workers(op))
        if isinstance(op, WriteFile):
            files.write_atomic(op.path, op.content, op.mode)
        elif isinstance(op, MakeDirs):
            op.path.mkdir(parents=True, exist_ok=True)
            if op.mode is not None:
                op.path.chmod(op.mode)
        elif isinstance(op, PrivateFile):
            files.open_private(op.path).close()
        elif isinstance(op, CopyTree):
            files.copy_tree(op.src, op.dst, op.ignore, op.link_from)
        elif isinstance(op, MoveTree):
            files.move_tree(op.src, op.dst, op.link_from)
        elif isinstance(op, CopyFile):
            op.dst.parent.mkdir(parents=True, exist_ok=True)
            files.copy_replacing(op.src, op.dst)
        elif isinstance(op, Symlink):
            files.switch_symlink(op.link, op.target)
        elif isinstance(op, Rename):
            os.replace(op.src, op.dst)
        elif isinstance(op, Remove):
            files.remove_path(op.path)
        elif isinstance(op, StopProcesses):
            procs.stop_processes(op.pids, op.grace)
        else:  # pragma: no cover - the Op union is closed
            raise TypeError(f"unknown op {op!r}")
        return RunResult(0)


class DryRunExecutor(Executor):
    """Prints each op as the shell line it stands for; changes nothing. Only ``deploy --dry-run``
    (``procedures.dryrun``) uses it, on ops planned without reading any result back."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.applied: list[Op] = []

    def apply(self, op: Op) -> RunResult:
        self.applied.append(op)
        self.echo(op.render())
        return RunResult(0)


def _daemon_result(problems: list[str]) -> RunResult:
    """Calls to the PM2 daemon: failed (one line per worker) if any of them did, else done."""
    return RunResult(1, stderr="; ".join(problems)) if problems else RunResult(0)
