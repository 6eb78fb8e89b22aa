"""Recovery: repair what an interrupted run (killed, or its machine rebooted) left, before anything else.

Every command that changes live state begins here, under the live lock (``procedures/deploy.py``):

    recover = wait for the last cut-over's old workers to drain
              -> a held cut-over killed before its approval: its held workers deleted (``recover_held``)
              -> an activation killed after its switch: the previous release put back (``repair_activation``)
              -> workers PM2 lost track of stopped
              -> the live release served again if PM2 lost it or runs another (``serve_live_again``)
              -> unfinished releases, build dirs and what still runs in them removed (``remove_unfinished``)

Every step can be repeated: a run killed during the recovery is recovered by the next one.
"""

from __future__ import annotations

from nextdeploy.activation.activate import (
    current_release,
    settle,
    start_or_reload,
    stop_lost_workers,
    switch_to,
    verify,
    write_ecosystem,
)
from nextdeploy.activation.failure import failed_once_put_back
from nextdeploy.activation.held import approve, read_held_state
from nextdeploy.activation.preflight import PREFLIGHT_MARKER
from nextdeploy.activation.purge import purge_workers, wait_until_gone
from nextdeploy.core.context import Context
from nextdeploy.core.errors import NextdeployError
from nextdeploy.core.manifest import is_approved, is_complete
from nextdeploy.core.paths import UNFINISHED_MARKER, DeployPaths
from nextdeploy.core.releaselog import Status, pending_switch
from nextdeploy.core.steps import StepName
from nextdeploy.host.files import remove_path
from nextdeploy.host.procs import processes_marked, processes_under, sees_the_same
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans.ops import Remove, StopProcesses
from nextdeploy.pm2.client import Pm2, Worker

# Seconds a leftover process gets to exit on SIGINT before SIGKILL: none of them serves users.
LEFTOVER_GRACE = 1.0


def recover(ctx: Context, pm2: Pm2, clean_builds: bool = True, restart_live: bool = True) -> None:
    """Repair what an interrupted run left: a half-done activation, unfinished releases, build dirs.

    ``clean_builds`` False: a deploy may be building right now (its unfinished release and build dir
    are not leftovers); only the live state is repaired. ``restart_live`` False: the caller serves the
    live release again itself (``start``, which must fail when it cannot, not warn)."""
    wait_until_gone(ctx, pm2)  # the old workers of the last held cut-over, still draining
    recover_held(ctx, pm2)
    recover_activation(ctx, pm2)
    stop_lost_workers(ctx, pm2)
    current = current_release(ctx)
    if restart_live and current:
        serve_live_again(ctx, pm2, current)
    if clean_builds:
        remove_unfinished(ctx, current)
    settle(ctx)


def recover_held(ctx: Context, pm2: Pm2) -> None:
    """Repair what a run killed during a held cut-over left: its held (or not yet cut-over) new workers are
    deleted and `current` goes back, while the old workers serve on (``held.json`` names them). Then any
    worker of a release that was never approved is deleted too."""
    releases_dir = ctx.paths.releases_dir

    def unapproved(worker: Worker) -> bool:  # it never took a request
        release = worker.release_in(releases_dir)
        return release is not None and not is_approved(ctx.paths.release_dir(release))

    state = read_held_state(ctx.paths.held_state_file)
    if state is not None:
        release, previous, old_ids, reapprove = state
        with ctx.reporter.step(f"delete the new workers of the interrupted cut-over to {release}",
                               StepName.RECOVER_HELD):
            back = previous is not None and is_complete(ctx.paths.release_dir(previous))
            if back and previous is not None and current_release(ctx) == release:
                switch_to(ctx, previous)  # a worker PM2 forks again then runs the old release
            purge_workers(ctx, pm2, lambda worker: worker.pm_id not in old_ids, unserved=unapproved)
            if reapprove:  # a rollback target or a put-back, approved before its check
                approve(ctx, release, again=True)
            ctx.executor.apply(Remove(ctx.paths.held_state_file))
    doomed = [worker for worker in pm2.workers(ctx.config.app.name) if unapproved(worker)]
    if doomed:
        ids = ", ".join(str(worker.pm_id) for worker in doomed)
        with ctx.reporter.step(f"delete {len(doomed)} held worker(s) of an unapproved release (PM2 id {ids})",
                               StepName.RECOVER_HELD):
            purge_workers(ctx, pm2, unapproved, unserved=unapproved)


def recover_activation(ctx: Context, pm2: Pm2) -> None:
    """An activation the log shows switched but never finished (no ``activated`` or ``failed`` after its
    ``switching``): put back what it replaced, and log it as failed (``refused``: a rollback target)."""
    pending = pending_switch(ctx.log.events())
    if pending is None:
        return
    ctx.reporter.warn(f"a previous run was interrupted while activating {pending.release}; repairing")
    # Killed during the repair, the next run repairs again (every step here can be repeated). A repair
    # that fails is not retried: the deploy after it goes on (the new release may be the fix).
    # A rollback target served well before (an active release): not failed for good for being interrupted.
    served = any(record.id == pending.release and record.usable for record in ctx.log.records())
    with failed_once_put_back(ctx, pending.release, "interrupted during activation",
                              event="refused" if served else "failed"):
        repair_activation(ctx, pm2, pending.release, pending.previous)


def repair_activation(ctx: Context, pm2: Pm2, release: str, previous: str | None) -> None:
    """Put back what ``release``'s interrupted activation replaced."""
    paths = ctx.paths
    with ctx.reporter.step("recover from the interrupted activation", StepName.RECOVER):
        if previous and is_complete(paths.release_dir(previous)):
            switch_to(ctx, previous)
            workers = pm2.workers(ctx.config.app.name)
            on_previous = [w for w in workers if w.release_in(paths.releases_dir) == previous]
            others = [w.pm_id for w in workers if w not in on_previous]
            if others and len(on_previous) >= ctx.config.server.instances:
                # Workers of both releases (a cut-over killed midway): drop the others.
                purge_workers(ctx, pm2, lambda worker: worker.pm_id in others)
                workers = on_previous
            if any(w.release_in(paths.releases_dir) != previous for w in workers) or not workers:
                start_or_reload(ctx, pm2, workers)
            verify(ctx, pm2, previous, set(), require_new_pids=False)
            ctx.log.append("rolled_back", previous, **{"from": release})
            pm2.save(required=False)
        else:
            # A first deploy died mid-activation: nothing was serving before, start clean.
            pm2.run(pm2_plan.delete_argv(pm2.binary, ctx.config.app.name))
            remove_path(paths.current_link)


def serve_live_again(ctx: Context, pm2: Pm2, current: str) -> None:
    """PM2 lost the app (daemon killed, reboot without startup), or a run killed during a reload left
    workers on another release: serve the live release again now, not after this deploy's build. A failure
    is a warning: the deploy goes on (the new release may be the fix; its activation starts the app afresh)."""
    paths = ctx.paths
    workers = pm2.workers(ctx.config.app.name)
    # A worker whose cwd cannot be read (another user's process) is not counted as a stray.
    strays = [w for w in workers if w.release_in(paths.releases_dir) not in (None, current)]
    if not is_complete(paths.release_dir(current)) or (workers and not strays):
        return
    step = (f"restart the live release {current} (PM2 had no workers)" if not workers else
            f"reload {len(strays)} worker(s) on another release back to the live release {current}")
    try:
        with ctx.reporter.step(step, StepName.RESTART_LIVE):
            write_ecosystem(ctx)
            start_or_reload(ctx, pm2, workers)
            verify(ctx, pm2, current, set(), require_new_pids=False)
    except NextdeployError as exc:
        ctx.reporter.warn(f"could not restart {current}: {exc.message}; deploying anyway")


def remove_unfinished(ctx: Context, current: str | None) -> None:
    """Remove what interrupted builds left: unfinished releases, build dirs and what still runs in them."""
    paths = ctx.paths
    records = {record.id: record for record in ctx.log.records()}
    for release_dir in sorted(paths.releases_dir.glob("*")):
        if release_dir.name == current or not release_dir.is_dir():
            continue
        record = records.get(release_dir.name)
        if (release_dir / UNFINISHED_MARKER).exists() or (record and record.status is Status.UNFINISHED):
            remove_path(release_dir)
            ctx.log.append("removed", release_dir.name, reason="unfinished (interrupted build)")
    # Killed before its release dir existed (during the export, install or build): only the log knows it.
    for record in records.values():
        if record.status is Status.UNFINISHED and record.id != current and not paths.release_dir(record.id).exists():
            ctx.log.append("removed", record.id, reason="unfinished (interrupted before its release was assembled)")
    stop_leftovers(ctx)
    for build_dir in paths.builds_dir.glob("*"):
        remove_path(build_dir)


def stop_leftovers(ctx: Context) -> None:
    """Stop what an interrupted deploy left running (``leftover_processes``): pnpm and next build still
    writing into its build dir, its preflight server serving a release (maybe deleted since) with the app's
    secrets in its env. Only while no deploy builds (the caller holds the build lock)."""
    leftovers = leftover_processes(ctx.paths)
    if leftovers:
        with ctx.reporter.step(f"stop {len(leftovers)} process(es) an interrupted deploy left running (pid "
                               f"{', '.join(map(str, leftovers))})", StepName.STOP_LEFTOVERS):
            ctx.executor.apply(StopProcesses(tuple(leftovers), LEFTOVER_GRACE))


def leftover_processes(paths: DeployPaths) -> list[int]:
    """What a deploy of this root started and left running when it was killed: its preflight server (by the
    marker in its env, wherever it works now) and install or build processes working in ``builds/``.
    Only leftovers when no deploy holds the build lock: else they are that deploy's. A process that sees
    another directory at the root's path (a container of its own on a shared PID namespace, with its own
    deploy root there) is not this root's, whatever its env or cwd say."""
    found = set(processes_marked(PREFLIGHT_MARKER, str(paths.root))) | set(processes_under(paths.builds_dir))
    return sorted(pid for pid in found if sees_the_same(pid, paths.root))


__all__ = ["leftover_processes", "recover", "stop_leftovers"]
