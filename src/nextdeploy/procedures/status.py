"""What serves on this host, read without changing anything: ``nextdeploy status`` and ``nextdeploy.status()``.

Never starts a PM2 daemon (asking the pm2 command would): the daemon's pid file, its socket-free
process list and ``/proc`` are read instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nextdeploy.activation.activate import current_release
from nextdeploy.activation.recovery import leftover_processes
from nextdeploy.core.checks import release_health
from nextdeploy.core.context import Context
from nextdeploy.core.manifest import read_manifest
from nextdeploy.host.lock import DeployLock
from nextdeploy.host.probe import health_problem, http_get, local_address
from nextdeploy.host.tools import find_tool, node_version
from nextdeploy.pm2.client import Pm2, startup_configured


@dataclass(frozen=True)
class WorkerStatus:
    """One PM2 worker of the app."""

    pm_id: int
    pid: int
    status: str
    restarts: int
    memory_mb: float
    release: str | None  # None when its directory is not a release here (or cannot be read)


@dataclass(frozen=True)
class Status:
    """The live release, its health, and each PM2 worker; ``to_json()`` is ``status --json``'s result."""

    app: str
    root: str
    current: str | None
    url: str
    healthy: bool
    health_problem: str | None
    pm2_daemon_running: bool
    pm2_installed: bool
    pm2_problem: str | None  # why PM2 cannot show the app (not installed, daemon not running); None if it can
    startup_on_boot: bool
    node: dict[str, str | None]  # "pm2": the Node PM2's daemon runs, "built_with": the live release's
    deploy_running: dict[str, Any] | None  # the deploy holding the build lock: pid, started_at...
    workers: list[WorkerStatus]
    lost_workers: list[int]  # pids of workers of a release here that run outside PM2's list
    draining_workers: list[int]  # pids of old workers PM2 is stopping
    # A preflight server or a build an interrupted deploy left running (a running deploy's are its own).
    leftover_processes: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def host_status(ctx: Context) -> Status:
    """Read the state of ``ctx``'s app on this host."""
    config = ctx.config
    current = current_release(ctx)
    pm2, pm2_installed, pm2_problem = pm2_as_it_is(ctx)
    # Asking the pm2 command would start a daemon: a status must change nothing.
    daemon_running = pm2.daemon_pid() is not None
    workers = pm2.workers(config.app.name) if daemon_running else []
    draining = pm2.leaving_workers(config.app.name) if daemon_running else []
    lost = pm2.lost_workers(ctx.paths.releases_dir)
    host = local_address(config.server.hostname)
    health = release_health(config.health, ctx.paths.release_dir(current)) if current else config.health
    probe = http_get(host, config.server.port, health.path, health.request_timeout)
    problem = health_problem(probe, health)
    daemon_node = pm2.daemon_node()
    deploy_running = _deploy_running(ctx.paths.build_lock_file)
    return Status(
        app=config.app.name,
        root=str(ctx.paths.root),
        current=current,
        url=f"http://{host}:{config.server.port}",
        healthy=problem is None,
        health_problem=problem,
        pm2_daemon_running=daemon_running,
        pm2_installed=pm2_installed,
        pm2_problem=pm2_problem,
        startup_on_boot=startup_configured(),
        node={
            "pm2": node_version(daemon_node) if daemon_node and Path(daemon_node).is_file() else None,
            "built_with": (read_manifest(ctx.paths.release_dir(current)) or {}).get("node_version")
            if current else None,
        },
        deploy_running=deploy_running,
        workers=[WorkerStatus(w.pm_id, w.pid, w.status, w.restarts, round(w.memory / 1e6, 1),
                              w.release_in(ctx.paths.releases_dir)) for w in workers],
        lost_workers=lost,
        draining_workers=[w.pid for w in draining],
        leftover_processes=[] if deploy_running else leftover_processes(ctx.paths),
    )


def pm2_as_it_is(ctx: Context) -> tuple[Pm2, bool, str | None]:
    """PM2 for a read-only command: whether pm2 is installed, and what is missing for it to show the app (None
    when its daemon runs). pm2 is never installed here and PM2_HOME not created; no pm2 command runs unless
    its daemon does (every pm2 command starts one)."""
    binary = find_tool("pm2", ctx.paths.tools_dir, ctx.config.pm2.bin)
    pm2 = Pm2(binary or "pm2", ctx.config.pm2_home, ctx.executor)
    if binary is None:
        where = ctx.config.pm2.bin or f"PATH or {ctx.paths.tools_dir}"
        return pm2, False, f"pm2 is not installed (not on {where}; `nextdeploy deploy` installs it)"
    if pm2.daemon_pid() is None:
        return pm2, True, f"PM2's daemon is not running (PM2_HOME={pm2.home_dir})"
    return pm2, True, None


def _deploy_running(build_lock_file: Path) -> dict[str, Any] | None:
    """The deploy holding the build lock now, if any."""
    owner = DeployLock(build_lock_file, "nextdeploy status").running_holder()
    return owner.__dict__ if owner is not None else None
