"""The deploy, as a short script of named steps; rollback, start and stop are their own procedures.

    deploy = build lock: [live lock: check the host, recover, note the live release]     (``_begin``)
             build and assemble the release beside it                                    (release.builder)
             check it: bridge assets, before_activate hook, preflight unless held        (``check_release``)
             [live lock: check the host, recover, then put it live: the held cut-over    (``put_live``)
                         (held.py) or switch + start/reload; verify, save, retain]

``build_release`` runs the same steps without the last one, and ``procedures.boundary.activate_release``
runs the last one on a release already on the host: together they are a deploy in two halves, as a fleet
controller drives it. Everything before the switch (or a held cut-over's approval) happens beside the live
release; a failure there changes nothing live. A failure after it puts the previous release back. So does an
interrupt (Ctrl-C, SIGTERM, SIGHUP: ``nextdeploy.core.interrupts``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nextdeploy.activation.activate import (
    ActivationReport,
    activate,
    current_release,
    settle,
)
from nextdeploy.activation.gate import pass_gate
from nextdeploy.activation.held import (
    activate_held,
    approve,
    held_cutover_ids,
)
from nextdeploy.activation.preflight import run_preflight
from nextdeploy.activation.recovery import recover
from nextdeploy.core.context import Context
from nextdeploy.core.errors import Interrupted, NextdeployError, PreflightError, stopped_by
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.ids import new_release_id
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.core.steps import StepName
from nextdeploy.host.lock import DeployLock
from nextdeploy.host.probe import listen_port
from nextdeploy.host.tools import require_tool
from nextdeploy.nextjs.skew import bridge_static_assets
from nextdeploy.plans.runtime import runtime_env
from nextdeploy.pm2.client import Pm2
from nextdeploy.procedures.hooks import run_hook
from nextdeploy.procedures.hostchecks import check_host, check_runtime_node, open_pm2
from nextdeploy.procedures.retention import retain, sweep_trash
from nextdeploy.release import builder
from nextdeploy.release.assemble import BuiltRelease
from nextdeploy.release.builder import prepare_root
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV, ensure_server_actions_key

# How long a built and preflighted release waits for a rollback or stop that holds the live lock.
ACTIVATION_LOCK_WAIT = 300.0
# Seconds a leftover process gets to exit on SIGINT before SIGKILL: none of them serves users.
LEFTOVER_GRACE = 1.0


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


@dataclass
class _Attempt:
    """What the hooks around a deploy need to know of it: set as the deploy learns it."""

    release: str | None = None
    live_before: str | None = None
    revision: str | None = None


@dataclass
class _Begun:
    """What the start of a deploy (or of ``build_release``) learnt under the live lock."""

    pm2: Pm2
    live_before: str | None
    sweeping: threading.Thread | None  # the deletion of trash/, beside the build


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
        begun = _begin(ctx, lock_timeout, build_lock, "nextdeploy deploy")
        pm2 = begun.pm2
        built, secrets = _build(ctx, begun, attempt)
        try:
            with _before_the_switch(built.id):
                checked = check_release(ctx, pm2, built, secrets, begun.live_before, attempt)
                live_lock = _live_lock_for_activation(ctx, lock_timeout)
            with live_lock:
                # What a rollback, a stop or another program changed during the build: checked again.
                check_host(ctx, pm2)
                recover(ctx, pm2, clean_builds=False)
                previous = current_release(ctx)
                if previous != begun.live_before:
                    ctx.reporter.info(f"the live release changed during the build ({begun.live_before or 'none'} "
                                      f"-> {previous or 'none'}, a rollback or stop); replacing {previous or 'none'}")
                try:
                    report = put_live(ctx, pm2, built.id, built.layout, previous, secrets, checked)
                    if begun.sweeping is not None:
                        begun.sweeping.join()  # long done (it ran beside the build); retention moves into trash/
                    removed = retain(ctx)
                finally:
                    settle(ctx)  # the old workers' drain, overlapped with verify and retention
        finally:
            _join(built.cleanup, begun.sweeping)
    return DeployResult(built.id, previous, time.monotonic() - started, report.seconds, removed, built.manifest)


def build_release(ctx: Context, lock_timeout: float = 0.0) -> str:
    """Build a new release and check it as a deploy does, up to and including its preflight (unless the held
    cut-over will check it on its workers), without putting it live: ``procedures.boundary.activate_release``
    does that. Returns its id. The ``after_activate`` and ``on_failure`` hooks are the deploy's, not run here."""
    prepare_root(ctx)
    with DeployLock(ctx.paths.build_lock_file, "nextdeploy build", lock_timeout) as build_lock:
        begun = _begin(ctx, lock_timeout, build_lock, "nextdeploy build")
        built, secrets = _build(ctx, begun, _Attempt())
        try:
            with _before_the_switch(built.id):
                check_release(ctx, begun.pm2, built, secrets, begun.live_before, _Attempt())
        finally:
            _join(built.cleanup, begun.sweeping)
    return built.id


def _begin(ctx: Context, lock_timeout: float, build_lock: DeployLock, holder: str) -> _Begun:
    """Under the live lock, briefly: the host checked, what an interrupted run left repaired."""
    with DeployLock(ctx.paths.lock_file, holder, lock_timeout) as live_lock:
        # A run killed during its activation held both: say it once.
        for taken in dict.fromkeys(lock.taken_over.describe() for lock in (build_lock, live_lock)
                                   if lock.taken_over):
            ctx.reporter.warn(f"took over the lock of an interrupted run: {taken}")
        pm2 = open_pm2(ctx)
        check_host(ctx, pm2)
        check_runtime_node(pm2)  # not in a rollback: it builds nothing, and must not be held up
        recover(ctx, pm2)
        live_before = current_release(ctx)
        sweeping = sweep_trash(ctx)  # beside the build, which leaves the CPU idle for seconds
    return _Begun(pm2, live_before, sweeping)


def _build(ctx: Context, begun: _Begun, attempt: _Attempt) -> tuple[BuiltRelease, dict[str, str]]:
    """A new release, built and assembled beside the live one (``release.builder``), and its secrets."""
    release_id = new_release_id()
    ctx.reporter.info(f"release {release_id}")
    attempt.release, attempt.live_before = release_id, begun.live_before
    secrets = {SERVER_ACTIONS_ENV: ensure_server_actions_key(ctx.config, ctx.paths)}
    with _before_the_switch(release_id):
        return builder.build_release(ctx, release_id, secrets), secrets


def _join(*threads: threading.Thread | None) -> None:
    for thread in threads:
        if thread is not None:
            thread.join()


def check_release(ctx: Context, pm2: Pm2, built: BuiltRelease, secrets: dict[str, str], live_before: str | None,
                  attempt: _Attempt) -> bool:
    """The checks of an assembled release before it goes live, beside the live one. True when it was
    preflighted here; False when the held cut-over will check it on the very workers that will serve."""
    checkpoint("assembled")
    bridge_static_assets(ctx, built.id)
    attempt.revision = built.manifest.get("revision")
    before_activate(ctx, built.id, live_before, attempt.revision)
    # A code-only change goes live by the held cut-over, its window watched on the very workers that will
    # serve (``held.py``); anything else is preflighted here, outside PM2.
    if held_cutover_ids(ctx, pm2, built.id) is not None:
        return False
    preflight(ctx, built.id, built.layout, secrets)
    return True


def put_live(ctx: Context, pm2: Pm2, release_id: str, layout: ReleaseLayout, previous: str | None,
             secrets: dict[str, str], checked: bool) -> ActivationReport:
    """Under the live lock: the held cut-over when the release was not ``checked`` and the workers allow it
    (else a preflight first), or a switch and a start or reload; then verify and save."""
    held_ids = None if checked else held_cutover_ids(ctx, pm2, release_id)
    if not checked and held_ids is None:  # the workers changed since: no held cut-over
        with _before_the_switch(release_id):
            preflight(ctx, release_id, layout, secrets)
    if held_ids is not None:
        return activate_held(ctx, pm2, release_id, previous, held_ids)
    pass_gate(ctx, release_id)  # a fleet's controller holds the switch (``activation.gate``)
    return activate(ctx, pm2, release_id, previous)


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


def preflight(ctx: Context, release_id: str, layout: ReleaseLayout, secrets: dict[str, str]) -> None:
    """The health gate: the release must serve, outside PM2, before it takes traffic."""
    node = require_tool("node")
    env = runtime_env(ctx.config, listen_port(), "127.0.0.1", secrets)
    with ctx.reporter.step(f"preflight: health gate on a private port ({ctx.config.health.stable_for:g} s window)",
                            StepName.PREFLIGHT):
        try:
            run_preflight(ctx.config, layout, node, env, ctx.paths.preflight_log(release_id))
        except PreflightError as exc:
            ctx.log.append("failed", release_id, reason=f"preflight: {exc.message}")
            raise
    approve(ctx, release_id)
