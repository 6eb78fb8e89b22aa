"""The public Python API, re-exported by ``nextdeploy`` (import it from there): what the CLI's
``deploy``, ``rollback`` and ``status`` do, as functions of a config.

Each call takes a :class:`~nextdeploy.core.config.Config` or the path of a ``nextdeploy.toml``, prints its
progress as plain lines to ``progress`` (stderr by default; each step line carries its stable name, see
``nextdeploy.core.steps``), returns a result with ``to_json()`` and raises a ``NextdeployError`` subclass, whose
``exit_code`` is the CLI's, for every expected failure. Unlike the CLI it installs no signal handlers:
a SIGTERM to the calling process does not put the previous release back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO, overload

from nextdeploy.core.config import Config
from nextdeploy.core.config import load_config as _load_config

if TYPE_CHECKING:
    from nextdeploy.core.context import Context
    from nextdeploy.procedures.deploy import DeployResult
    from nextdeploy.procedures.status import Status


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a ``nextdeploy.toml``; raises ConfigError (exit code 3) saying what is wrong."""
    return _load_config(Path(path))


@overload
def deploy(config: Config | str | os.PathLike[str], *, lock_timeout: float = ...,
           dry_run: Literal[False] = ..., progress: TextIO | None = ...) -> DeployResult: ...


@overload
def deploy(config: Config | str | os.PathLike[str], *, lock_timeout: float = ...,
           dry_run: Literal[True], progress: TextIO | None = ...) -> None: ...


def deploy(config: Config | str | os.PathLike[str], *, lock_timeout: float = 0.0, dry_run: bool = False,
           progress: TextIO | None = None) -> DeployResult | None:
    """Build a release and put it live with zero downtime, or change nothing live (``nextdeploy deploy``).

    ``lock_timeout``: seconds to wait for another run. ``dry_run``: print every host operation to
    ``progress`` without doing any, and return None."""
    ctx = _context(config, progress, dry_run)
    if dry_run:
        from nextdeploy.procedures.dryrun import print_deploy_plan

        print_deploy_plan(ctx)
        return None
    from nextdeploy.procedures.deploy import deploy as run_deploy

    return run_deploy(ctx, lock_timeout=lock_timeout)


def rollback(config: Config | str | os.PathLike[str], *, to: str | None = None, lock_timeout: float = 0.0,
             progress: TextIO | None = None) -> DeployResult:
    """Put the previous good release (or release ``to``) back, verified, without a build
    (``nextdeploy rollback``)."""
    from nextdeploy.procedures.rollback import rollback as run_rollback

    return run_rollback(_context(config, progress), to=to, lock_timeout=lock_timeout)


def status(config: Config | str | os.PathLike[str], *, progress: TextIO | None = None) -> Status:
    """The live release, its health and each PM2 worker (``nextdeploy status``); changes nothing and
    never starts a PM2 daemon."""
    from nextdeploy.procedures.status import host_status

    return host_status(_context(config, progress))


def _context(config: Config | str | os.PathLike[str], progress: TextIO | None, dry_run: bool = False) -> Context:
    from nextdeploy.core.context import Context
    from nextdeploy.core.ui import Reporter
    from nextdeploy.host.executor import DryRunExecutor, LocalExecutor

    if not isinstance(config, Config):
        config = load_config(config)
    # JSON mode: progress as plain lines, tagged with the step names, on ``progress``; no result is printed.
    reporter = Reporter(json_mode=True, err_stream=progress if progress is not None else sys.stderr)
    executor = DryRunExecutor(reporter.info) if dry_run else LocalExecutor(echo=reporter.info)
    return Context(config, executor, reporter)
