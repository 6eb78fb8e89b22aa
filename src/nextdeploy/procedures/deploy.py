"""The deploy and rollback procedures, as short scripts of named steps.

    deploy   = build lock: [live lock: recover], build, assemble, then either
                 a code-only change: [live lock: held cut-over (held.py): new workers beside the old ones,
                                      held off the port through the window, let in; verify, save, retain]
                 or anything else:   preflight, [live lock: switch, start/reload, verify, save, retain]
    rollback = live lock: recover, then the held cut-over back to the target (its workers checked beside the
               live ones before they take traffic), or a preflight then switch back, reload; verify, save
               (never waits for a build)
    start    = live lock: recover, start or reload the live release, verify, save (no switch, no build)

Everything before the switch (or a held cut-over's approval) happens beside the live release; a failure
there changes nothing live. A failure after it puts the previous release back. So does an interrupt (Ctrl-C,
SIGTERM, SIGHUP: ``nextdeploy.core.interrupts``).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nextdeploy.activation.activate import (
    activate,
    current_release,
    release_only_change,
    serving_problem,
    settle,
    start_live,
)
from nextdeploy.activation.held import activate_held, approve, held_cutover_ids
from nextdeploy.activation.preflight import run_preflight
from nextdeploy.activation.recovery import recover
from nextdeploy.core.context import Context
from nextdeploy.core.errors import (
    Interrupted,
    LockError,
    NameTakenError,
    NextdeployError,
    PreflightError,
    ReleaseError,
    ReleaseNotFoundError,
    RollbackError,
    stopped_by,
)
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.ids import new_release_id
from nextdeploy.core.manifest import holds_until_approved, is_complete, layout_of
from nextdeploy.core.releaselog import ReleaseRecord
from nextdeploy.core.retention import releases_to_remove, rollback_target
from nextdeploy.core.steps import StepName
from nextdeploy.host.executor import (
    bind_error,
    port_holders,
    remove_in_background,
)
from nextdeploy.host.lock import DeployLock
from nextdeploy.host.ports import port_problem
from nextdeploy.host.probe import listen_port
from nextdeploy.host.tools import node_version, require_tool
from nextdeploy.nextjs import envcheck
from nextdeploy.nextjs.prepare import check_node
from nextdeploy.nextjs.skew import bridge_static_assets
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans.runtime import runtime_env
from nextdeploy.pm2.client import Pm2
from nextdeploy.procedures.hooks import run_hook
from nextdeploy.release.builder import BuiltRelease, build_release, prepare_root
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV, ensure_server_actions_key, secret_values

# How long a built and preflighted release waits for a rollback or stop that holds the live lock.
ACTIVATION_LOCK_WAIT = 300.0


@dataclass
class DeployResult:
    release: str
    previous: str | None
    seconds: float
    activation_seconds: float
    removed: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
            "activation_seconds": round(self.activation_seconds, 3),
            "removed": self.removed,
            "manifest": self.manifest,
        }


def open_pm2(ctx: Context) -> Pm2:
    binary = require_tool("pm2", ctx.paths.tools_dir, ctx.config.pm2.bin, install=True)
    pm2 = Pm2(binary, ctx.config.pm2_home, ctx.executor)
    pm2.ensure_home()
    return pm2


@dataclass
class _Attempt:
    """What the hooks around a deploy need to know of it: set as the deploy learns it."""

    release: str | None = None
    live_before: str | None = None
    revision: str | None = None


def deploy(ctx: Context, lock_timeout: float = 0.0) -> DeployResult:
    """Build a new release and put it live with zero downtime, or change nothing live.

    Two locks: the build lock for the whole run (one build at a time), the live lock only while live
    state changes (the recovery at the start, the activation at the end). A rollback or a stop needs
    only the live lock, so it is never held up by a build of several minutes. The ``[hooks]``:
    ``before_activate`` once the release is assembled, ``after_activate`` once it is live, ``on_failure``
    when a deploy that had begun its release failed (not when it was interrupted).
    """
    attempt = _Attempt()
    try:
        result = _deploy(ctx, lock_timeout, attempt)
    except NextdeployError as exc:
        if attempt.release is not None:
            problem = run_hook(ctx, "on_failure", attempt.release, attempt.live_before, attempt.revision,
                               error=exc.message)
            if problem is not None:
                ctx.reporter.warn(problem)
        raise
    problem = run_hook(ctx, "after_activate", result.release, result.previous, attempt.revision)
    if problem is not None:
        ctx.reporter.warn(f"{problem}; release {result.release} is live (its output: "
                          f"{ctx.paths.build_log(result.release)})")
    return result


def _deploy(ctx: Context, lock_timeout: float, attempt: _Attempt) -> DeployResult:
    started = time.monotonic()
    prepare_root(ctx)
    with DeployLock(ctx.paths.build_lock_file, "nextdeploy deploy", lock_timeout) as build_lock:
        with DeployLock(ctx.paths.lock_file, "nextdeploy deploy", lock_timeout) as live_lock:
            # A run killed during its activation held both: say it once.
            for holder in dict.fromkeys(lock.taken_over.describe() for lock in (build_lock, live_lock)
                                        if lock.taken_over):
                ctx.reporter.warn(f"took over the lock of an interrupted run: {holder}")
            pm2 = open_pm2(ctx)
            check_host(ctx, pm2)
            check_runtime_node(pm2)  # not in a rollback: it builds nothing, and must not be held up
            recover(ctx, pm2)
            live_before = current_release(ctx)
            sweeping = sweep_trash(ctx)  # beside the build, which leaves the CPU idle for seconds
        release_id = new_release_id()
        ctx.reporter.info(f"release {release_id}")
        attempt.release, attempt.live_before = release_id, live_before
        key = ensure_server_actions_key(ctx.config, ctx.paths)
        secrets = {SERVER_ACTIONS_ENV: key}
        with _before_the_switch(release_id):
            built = build_release(ctx, release_id, secrets)
        try:
            with _before_the_switch(release_id):
                checkpoint("assembled")
                bridge_static_assets(ctx, release_id)
                attempt.revision = built.manifest.get("revision")
                before_activate(ctx, release_id, live_before, attempt.revision)
                # A code-only change goes live by the held cut-over, its window watched on the very workers
                # that will serve (``held.py``); anything else is preflighted here, outside PM2.
                held = held_cutover_ids(ctx, pm2, release_id) is not None
                if not held:
                    preflight(ctx, built, secrets)
                live_lock = _live_lock_for_activation(ctx, lock_timeout)
            with live_lock:
                # What a rollback, a stop or another program changed during the build: checked again.
                check_host(ctx, pm2)
                recover(ctx, pm2, clean_builds=False)
                previous = current_release(ctx)
                if previous != live_before:
                    ctx.reporter.info(f"the live release changed during the build ({live_before or 'none'} -> "
                                      f"{previous or 'none'}, a rollback or stop); replacing {previous or 'none'}")
                try:
                    held_ids = held_cutover_ids(ctx, pm2, release_id) if held else None
                    if held and held_ids is None:  # the workers changed during the build: no held cut-over
                        with _before_the_switch(release_id):
                            preflight(ctx, built, secrets)
                    if held_ids is not None:
                        report = activate_held(ctx, pm2, release_id, previous, held_ids)
                    else:
                        report = activate(ctx, pm2, release_id, previous)
                    if sweeping is not None:
                        sweeping.join()  # long done (it ran beside the build); retention moves into trash/
                    removed = retain(ctx)
                finally:
                    settle(ctx)  # the old workers' drain, overlapped with verify and retention
        finally:
            for cleanup in (built.cleanup, sweeping):
                if cleanup is not None:
                    cleanup.join()
    return DeployResult(release_id, previous, time.monotonic() - started, report.seconds, removed, built.manifest)


def _live_lock_for_activation(ctx: Context, lock_timeout: float) -> DeployLock:
    """The live lock for the activation, taken now: a rollback or stop that holds it takes seconds, and the
    build before was minutes of work, so this waits for it (at least ACTIVATION_LOCK_WAIT s)."""
    lock = DeployLock(ctx.paths.lock_file, "nextdeploy deploy", max(lock_timeout, ACTIVATION_LOCK_WAIT))
    lock.acquire()
    return lock


@contextmanager
def _before_the_switch(release_id: str) -> Iterator[None]:
    """An interrupt here says that nothing live changed (the build and preflight server die with it)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        name = stopped_by(exc)
        raise Interrupted(name, f"interrupted by {name} before release {release_id} went live; nothing live "
                                "changed") from None


def before_activate(ctx: Context, release_id: str, live_before: str | None, revision: str | None) -> None:
    """The ``before_activate`` hook (a migration), once, before any traffic moves: a failure rejects the
    release like a failed preflight."""
    try:
        run_hook(ctx, "before_activate", release_id, live_before, revision)
    except NextdeployError as exc:
        ctx.log.append("failed", release_id, reason=exc.message)
        raise


def preflight(ctx: Context, built: BuiltRelease, secrets: dict[str, str]) -> None:
    """The health gate: the release must serve, outside PM2, before it takes traffic."""
    node = require_tool("node")
    env = runtime_env(ctx.config, listen_port(), "127.0.0.1", secrets)
    with ctx.reporter.step(f"preflight: health gate on a private port ({ctx.config.health.stable_for:g} s window)",
                            StepName.PREFLIGHT):
        try:
            run_preflight(ctx.config, built.layout, node, env, ctx.paths.preflight_log(built.id))
        except PreflightError as exc:
            ctx.log.append("failed", built.id, reason=f"preflight: {exc.message}")
            raise
    approve(ctx, built.id)


def check_host(ctx: Context, pm2: Pm2) -> None:
    """What other programs hold that the app needs: its PM2 name, its port. In milliseconds, not after the
    build and the switch; before the recovery, which may start the live release again."""
    processes = running_processes(pm2)
    check_app_name(ctx, pm2, processes)
    check_public_port(ctx, pm2, processes)


def running_processes(pm2: Pm2) -> list[dict[str, Any]]:
    """PM2's process list, without starting a daemon: no daemon (no ``rpc.sock``), nothing runs."""
    return pm2.processes() if (pm2.home_dir / "rpc.sock").exists() else []


def check_runtime_node(pm2: Pm2) -> None:
    """Raise ToolMissingError if PM2's daemon would run the workers on another Node than the build's and the
    preflight's: started before Node was upgraded (or nvm switched), it keeps forking its own."""
    daemon_node = pm2.daemon_node()
    if daemon_node is None:
        return  # no daemon: the pm2 command starts one with the node on PATH
    node = require_tool("node")
    if os.path.realpath(daemon_node) == os.path.realpath(node):
        return  # the usual case, decided without running either
    daemon_version = node_version(daemon_node) if os.path.isfile(daemon_node) else None
    problem = envcheck.runtime_node_problem(pm2.home_dir, daemon_node, daemon_version, node, node_version(node))
    if problem is not None:
        raise problem


def check_app_name(ctx: Context, pm2: Pm2, processes: list[dict[str, Any]]) -> None:
    """Raise NameTakenError if PM2 runs something else under the app's name: the activation would reload it,
    and a failed first deploy would delete it."""
    name = ctx.config.app.name
    foreign = pm2_plan.foreign_processes(processes, name, ctx.config.root)
    if foreign:
        env = foreign[0].get("pm2_env") or {}
        raise NameTakenError(
            f"PM2 (PM2_HOME={pm2.home_dir}) already runs an app named {name!r} that is not from "
            f"{ctx.config.root}: {env.get('pm_exec_path') or '?'} (pid {foreign[0].get('pid') or '-'})",
            hint=f"`pm2 delete {name}` if it is an old copy of this app, or set [app] name to another name",
        )


def check_public_port(ctx: Context, pm2: Pm2, processes: list[dict[str, Any]]) -> None:
    """Raise PortError unless the app can listen on its port: free, or held by the live app itself."""
    server = ctx.config.server
    error = bind_error(server.hostname, server.port)
    if error is None:
        return
    ours = {int(entry["pid"]) for entry in processes if entry.get("name") == ctx.config.app.name and entry.get("pid")}
    daemon = pm2.daemon_pid()
    if daemon is not None:
        ours.add(daemon)  # in cluster mode the daemon, the cluster primary, holds the listening socket
    holders = port_holders(server.port, likely=ours) if error.errno == errno.EADDRINUSE else []
    problem = port_problem(server.hostname, server.port, error, holders, ours)
    if problem is not None:
        raise problem


def rollback(ctx: Context, to: str | None = None, lock_timeout: float = 0.0) -> DeployResult:
    """Put an earlier good release back, without rebuilding."""
    started = time.monotonic()
    with _changing_live_state(ctx, "nextdeploy rollback", lock_timeout) as pm2:
        records = ctx.log.records()
        current = current_release(ctx)
        target = to or rollback_target(records, current)
        _check_rollback_target(ctx, records, target, current)
        assert target is not None
        layout = layout_of(ctx.paths.release_dir(target))
        if layout is not None:
            check_node(layout)
        bridge_static_assets(ctx, target)
        try:
            # Checked before traffic moves to it, as it was when it first went live (its recorded checks): by
            # the held cut-over when nothing but the release changes, else by a preflight outside PM2.
            held_ids = release_only_change(ctx, pm2) if holds_until_approved(ctx.paths.release_dir(target)) else None
            if held_ids and current is not None:
                report = activate_held(ctx, pm2, target, current, held_ids, rollback=True)
            else:
                _preflight_rollback_target(ctx, target, current)
                approve(ctx, target, again=True)  # an earlier check taken back by a killed run
                report = activate(ctx, pm2, target, current, event="rolled_back")
        finally:
            settle(ctx)
    return DeployResult(target, current, time.monotonic() - started, report.seconds)


def _preflight_rollback_target(ctx: Context, target: str, current: str | None) -> None:
    """Raise RollbackError, with nothing live changed, if ``target`` fails the preflight outside PM2."""
    layout = layout_of(ctx.paths.release_dir(target))
    if layout is None:
        return
    env = runtime_env(ctx.config, listen_port(), "127.0.0.1", secret_values(ctx.paths) or {})
    with ctx.reporter.step(f"check {target} before traffic moves: health gate on a private port", StepName.PREFLIGHT):
        try:
            run_preflight(ctx.config, layout, require_tool("node"), env, ctx.paths.preflight_log(target))
        except PreflightError as exc:
            ctx.log.append("refused", target, reason=f"rollback check: {exc.message}")
            raise RollbackError(
                f"rollback to {target} refused: it failed its checks before taking traffic ({exc.message}); "
                f"nothing live changed{f', {current} still serves' if current else ''}",
                hint="see the server output above; `nextdeploy rollback --to ID` picks another release",
                details=exc.details) from None


@dataclass
class StartResult:
    release: str
    already_serving: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "already_serving": self.already_serving, "seconds": round(self.seconds, 3)}


def start(ctx: Context, lock_timeout: float = 0.0) -> StartResult:
    """Serve the live release again, without building or switching: after `nextdeploy stop`, a reboot
    without `pm2 startup`, a killed PM2 daemon. Nothing to do when it serves already."""
    started = time.monotonic()
    with _changing_live_state(ctx, "nextdeploy start", lock_timeout, restart_live=False) as pm2:
        current = current_release(ctx)
        if current is None:
            raise ReleaseNotFoundError(f"no release is live in {ctx.paths.root}: nothing to start",
                                       hint="run `nextdeploy deploy`")
        if not is_complete(ctx.paths.release_dir(current)):
            raise ReleaseError(f"the live release {current} is incomplete ({ctx.paths.release_dir(current)})",
                               hint="`nextdeploy rollback` puts an earlier good release back; or deploy again")
        layout = layout_of(ctx.paths.release_dir(current))
        if layout is not None:
            check_node(layout)
        workers = pm2.workers(ctx.config.app.name)
        if workers and serving_problem(ctx, workers, current) is None:
            return StartResult(current, True, time.monotonic() - started)
        try:
            start_live(ctx, pm2, current, workers)
        finally:
            settle(ctx)
    return StartResult(current, False, time.monotonic() - started)


@contextmanager
def _changing_live_state(ctx: Context, holder: str, lock_timeout: float, restart_live: bool = True) -> Iterator[Pm2]:
    """How a rollback and a start begin: the live lock, the host checked, what an interrupted run left
    repaired (``recover``). Never waits for a build."""
    prepare_root(ctx)
    with DeployLock(ctx.paths.lock_file, holder, lock_timeout):
        pm2 = open_pm2(ctx)
        check_host(ctx, pm2)
        with build_lock_if_free(ctx, holder) as no_build_running:
            recover(ctx, pm2, clean_builds=no_build_running, restart_live=restart_live)
        yield pm2


@contextmanager
def build_lock_if_free(ctx: Context, holder: str) -> Iterator[bool]:
    """Hold the build lock if no deploy is building (True), or yield False at once: a rollback or a start
    never waits for a build, and leaves its files alone."""
    try:
        lock = DeployLock(ctx.paths.build_lock_file, holder)
        lock.acquire()
    except LockError:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _check_rollback_target(ctx: Context, records: list[ReleaseRecord], target: str | None,
                           current: str | None) -> None:
    if target is None:
        raise RollbackError("there is no earlier good release to roll back to",
                            hint="see `nextdeploy releases`; failed and unfinished releases are never used")
    record = next((r for r in records if r.id == target), None)
    if record is None or not ctx.paths.release_dir(target).is_dir():
        raise ReleaseNotFoundError(f"no release {target!r} in {ctx.paths.releases_dir}",
                                   hint="pick an id from `nextdeploy releases`")
    if target == current:
        raise RollbackError(f"release {target} is already live", hint="pick another id from `nextdeploy releases`")
    if not record.usable or not is_complete(ctx.paths.release_dir(target)):
        raise RollbackError(
            f"release {target} is {record.status.value} and cannot be rolled back to",
            hint="only releases that were live and healthy can be; see `nextdeploy releases`",
        )


def retain(ctx: Context) -> list[str]:
    """Remove releases beyond ``[releases] keep`` (never the live one or the rollback target), and their build
    and preflight logs.

    Each is renamed into ``trash/`` (atomic: a run killed here never leaves half a release that still
    looks complete), and deleted during the next deploy's build (``sweep_trash``): deleting its ~1,200
    files took 0.1-0.2 s of a deploy under the bench's load."""
    paths = ctx.paths
    on_disk = {path.name for path in paths.releases_dir.iterdir() if path.is_dir()}
    doomed = releases_to_remove(ctx.log.records(), on_disk, current_release(ctx), ctx.config.releases.keep)
    if doomed:
        with ctx.reporter.step(f"remove {len(doomed)} old release{'s' if len(doomed) > 1 else ''}", StepName.RETAIN):
            paths.trash_dir.mkdir(exist_ok=True)
            for release_id in doomed:
                os.rename(paths.release_dir(release_id), paths.trash_dir / release_id)
                for log in (paths.build_log(release_id), paths.preflight_log(release_id)):  # they go with it
                    if log.is_file():
                        os.rename(log, paths.trash_dir / release_id / log.name)
                ctx.log.append("removed", release_id)
    return doomed


def sweep_trash(ctx: Context) -> threading.Thread | None:
    """Start deleting what retention moved to ``trash/`` (see ``retain``); None when there is nothing."""
    trash = ctx.paths.trash_dir
    return remove_in_background(trash) if trash.is_dir() else None


__all__ = ["DeployResult", "NextdeployError", "deploy", "recover", "retain", "rollback"]
