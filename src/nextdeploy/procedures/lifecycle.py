"""Start and stop: serve the live release again, or take the app out of PM2 (no build, no switch).
Also how every procedure that changes live state without building begins (``changing_live_state``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nextdeploy.activation.activate import current_release, serving_problem, settle, start_live, stop_lost_workers
from nextdeploy.activation.recovery import recover, stop_leftovers
from nextdeploy.core.context import Context
from nextdeploy.core.errors import LockError, ReleaseError, ReleaseNotFoundError
from nextdeploy.core.manifest import is_complete, layout_of
from nextdeploy.core.steps import StepName
from nextdeploy.host.lock import DeployLock
from nextdeploy.host.rootmark import ROOT_MARKER
from nextdeploy.nextjs.prepare import check_node
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.pm2.client import Pm2
from nextdeploy.procedures.hostchecks import check_app_name, check_host, open_pm2, running_processes
from nextdeploy.release.builder import prepare_root


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
    with changing_live_state(ctx, "nextdeploy start", lock_timeout, restart_live=False) as pm2:
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
def changing_live_state(ctx: Context, holder: str, lock_timeout: float, restart_live: bool = True) -> Iterator[Pm2]:
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


@dataclass
class StopResult:
    release: str | None  # the live release, kept (``start`` serves it again)
    stopped_workers: int  # PM2 workers of the app removed (0: it was stopped already)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "stopped_workers": self.stopped_workers, "seconds": round(self.seconds, 3)}


def stop(ctx: Context, lock_timeout: float = 0.0) -> StopResult:
    """Remove the app from PM2. Releases and ``current`` are kept; ``start`` serves the live release again."""
    started = time.monotonic()
    with DeployLock(ctx.paths.lock_file, "nextdeploy stop", lock_timeout):
        pm2 = open_pm2(ctx)
        check_app_name(ctx, pm2, running_processes(pm2))  # never delete another app that has the same name
        workers = pm2.workers(ctx.config.app.name)
        with ctx.reporter.step(f"remove {ctx.config.app.name} from PM2", StepName.STOP):
            if workers:
                pm2.check(pm2_plan.delete_argv(pm2.binary, ctx.config.app.name), "delete the app")
            pm2.save()
        # A crash-looping worker that PM2 was restarting during the delete can outlive it.
        stop_lost_workers(ctx, pm2, after_delete=any(worker.status != "online" for worker in workers))
        # A killed deploy's preflight server serves too. Only in a root of ours (never someone's processes).
        if (ctx.paths.root / ROOT_MARKER).is_file():
            with build_lock_if_free(ctx, "nextdeploy stop") as free:
                if free:
                    stop_leftovers(ctx)
        return StopResult(current_release(ctx), len(workers), time.monotonic() - started)
