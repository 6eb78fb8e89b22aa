"""The held cut-over: a code-only deploy boots the new release's workers under PM2 beside the old ones.

    held.json, switch current -> PM2 starts one more worker like the first old one (same env and options; it
    starts from ``current``: the new release), and one like each other old one once the first answers
    -> each boots and waits off the public port (launcher.cjs's hold) -> the stability window: the
    release stays healthy for ``[health] stable_for`` s from its first good answer (as in the preflight,
    one worker's), every new worker answers its health path on its private port, the smoke routes pass,
    none exits or restarts -> approve the release (its ``approved`` file): the new workers open the public
    port within 20 ms -> delete the old workers (they drain on their own) -> verify, save.

Why: the preflight path boots the release twice (once on a private port through the window, then again
under PM2 in the reload) and the window waits in between. Here the workers that will serve are the ones
watched through the window, and their boot is inside it: 1.8 s less per deploy in the bench (README).
A release that fails in the window never took a request: its workers are deleted and ``current`` goes
back, the old workers never noticed. A run killed in the window leaves the old workers serving and the
held ones waiting (PM2 answers no reload and kills no old worker here, unlike a reload held that long);
the next run's recovery deletes them (``recovery.recover_held``, from ``held.json``).

Only when nothing but the release changes (``activate.release_only_change``): a first start, a changed
config, env or secret goes through the preflight and PM2's reload, as does a release made before the hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from nextdeploy.activation import failure
from nextdeploy.activation.activate import (
    ActivationReport,
    file_size,
    put_back,
    release_only_change,
    start_or_reload,
    switch_to,
    verify,
    write_ecosystem,
    written_since,
)
from nextdeploy.activation.preflight import FATAL_OUTPUT_MARKERS, launcher_reason
from nextdeploy.activation.purge import purge_workers, wait_until_gone
from nextdeploy.activation.window import (
    EXIT_GRACE,
    INCLUDE_FIX,
    STILL_SERVING,
    HeldWindow,
    Next,
    StabilityWindow,
    fatal_output,
)
from nextdeploy.core.checks import health_hint, release_health
from nextdeploy.core.context import Context
from nextdeploy.core.errors import (
    NextdeployError,
    Pm2Error,
    PreflightError,
)
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.manifest import holds_until_approved, is_approved, is_complete, layout_of
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.core.steps import StepName
from nextdeploy.host.probe import health_problem, http_get
from nextdeploy.nextjs.smoke import run_smoke
from nextdeploy.plans.ops import DeleteWorkers, Remove, SpawnWorkers, WriteFile
from nextdeploy.pm2.client import Pm2, Worker
from nextdeploy.release.secrets import protect_pm2_dump

# How long the approved workers get to open the public port (they look for the approval every 20 ms).
OPEN_TIMEOUT = 10.0


def approve(ctx: Context, release_id: str, again: bool = False) -> None:
    """Let the release's workers take traffic: now, and whenever PM2 starts one of them later. ``again``: it
    had been approved before its approval was taken back for a check (a rollback, a put-back)."""
    layout = ReleaseLayout(ctx.paths.release_dir(release_id))
    if again and not is_complete(layout.release_dir):
        return
    if holds_until_approved(layout.release_dir):
        ctx.executor.apply(WriteFile(layout.approved_file, "approved\n"))


def held_cutover_ids(ctx: Context, pm2: Pm2, release_id: str) -> tuple[int, ...] | None:
    """The old workers' ids when ``release_id`` can go live by the held cut-over, else None."""
    if not holds_until_approved(ctx.paths.release_dir(release_id)) or is_approved(ctx.paths.release_dir(release_id)):
        return None
    return release_only_change(ctx, pm2)


def activate_held(ctx: Context, pm2: Pm2, release_id: str, previous: str | None,
                  old_ids: tuple[int, ...], rollback: bool = False) -> ActivationReport:
    """Put ``release_id`` live by the held cut-over. A release that fails its window raises PreflightError
    with the old workers untouched; a failure after the cut-over puts ``previous`` back (``put_back_held``)
    and raises as ``activate`` does.

    ``rollback``: ``release_id`` is an earlier good release, checked this way before traffic moves to it. It
    was approved when it first went live: held again for the window. Failing it is not held against it (a
    ``refused`` event, not a sticky ``failed``): refused before the cut-over, RollbackError, nothing live
    changed."""
    config = ctx.config
    name = config.app.name
    old_workers = [worker for worker in pm2.workers(name) if worker.pm_id in old_ids]
    old_pids = {worker.pid for worker in old_workers}
    layout = layout_of(ctx.paths.release_dir(release_id)) or ReleaseLayout(ctx.paths.release_dir(release_id))
    protect_pm2_dump(pm2.home_dir)
    logs = _LogMarks(ctx)
    ctx.log.append("switching", release_id, **{"from": previous})
    try:
        step = f"preflight: new workers under PM2, held off the public port ({config.health.stable_for:g} s window)"
        if rollback:
            step = f"check {release_id} before traffic moves: its workers under PM2, held off the public port"
        with ctx.reporter.step(step, StepName.HELD):
            new_workers = _hold(ctx, pm2, release_id, previous, old_ids, layout, logs, reapprove=rollback)
        if ctx.gate is not None and not rollback:  # a fleet's controller holds the cut-over (``gate``)
            ctx.gate(release_id)
    except (NextdeployError, KeyboardInterrupt) as exc:
        def reject() -> None:
            _reject(ctx, pm2, release_id, previous, set(old_ids), old_pids)
            if rollback:
                approve(ctx, release_id, again=True)
        failure.before_traffic(ctx, exc, release_id, previous, reject, details=logs.lines, rollback=rollback)

    started = time.monotonic()
    leaving = frozenset(old_ids)
    new_ids = frozenset(worker.pm_id for worker in new_workers)
    try:
        with ctx.reporter.step(f"switch traffic -> {release_id}: the held workers take it, the old ones drain",
                               StepName.CUTOVER):
            _cut_over(ctx, pm2, release_id, layout, new_ids, old_ids)
        with ctx.reporter.step("verify every worker runs the new release", StepName.VERIFY):
            workers = verify(ctx, pm2, release_id, old_pids, leaving=leaving,
                             during_watch=lambda: pm2.save(leaving=leaving))
    except (NextdeployError, KeyboardInterrupt) as exc:
        # Approved already: the new workers serve. What failed is PM2 or the public port: the previous release
        # comes back the same way, beside them (``put_back_held``).
        failure.after_switch(ctx, exc, release_id, previous,
                             lambda: put_back_held(ctx, pm2, previous, release_id, leaving),
                             details=logs.lines, event="refused" if rollback else "failed")
    ctx.log.append("rolled_back" if rollback else "activated", release_id, **({"from": previous} if rollback else {}))
    write_ecosystem(ctx)  # unchanged (a release-only change), rewritten as every activation does
    return ActivationReport(release_id, time.monotonic() - started, workers)


def _hold(ctx: Context, pm2: Pm2, release_id: str, previous: str | None, old_ids: tuple[int, ...],
          layout: ReleaseLayout, logs: _LogMarks, reapprove: bool = False,
          stable_for: float | None = None, others: frozenset[int] = frozenset()) -> list[Worker]:
    """Start ``release_id``'s workers beside ``old_ids`` (one like each), held off the public port, and watch
    them through the window (``_window``). ``reapprove``: the release was approved before (a rollback target,
    a put-back): its approval is taken back for the window, and given back by the recovery if this run dies.
    ``others``: ids of workers still leaving (not new, not old)."""
    socket = pm2.home_dir / "rpc.sock"
    # Whom to delete if this run is killed before the cut-over (``recovery.recover_held``).
    state = _state(release_id, previous, old_ids, reapprove)
    ctx.executor.apply(WriteFile(ctx.paths.held_state_file, state))
    if reapprove:
        ctx.executor.apply(Remove(layout.approved_file))
    switch_to(ctx, release_id)  # PM2 starts the new workers from `current`
    spawned = time.monotonic()
    # One new worker first, the others once it answers (see window.REST_AFTER).
    _spawn(ctx, socket, old_ids[:1])
    return _window(ctx, pm2, layout, set(old_ids) | others, spawned, logs,
                   spawn_rest=lambda: _spawn(ctx, socket, old_ids[1:]), stable_for=stable_for)


def _cut_over(ctx: Context, pm2: Pm2, release_id: str, layout: ReleaseLayout, new_ids: frozenset[int],
              old_ids: tuple[int, ...], put_back: bool = False) -> None:
    """Approve: the held workers open the public port; then the old ones are deleted (they drain)."""
    approve(ctx, release_id)
    if not put_back:
        checkpoint("approved")
    _wait_serving(ctx, pm2, layout, new_ids)
    # Cut over: from here a killed run leaves the new workers serving (the recovery reloads them).
    ctx.executor.apply(Remove(ctx.paths.held_state_file))
    # The old workers stop taking new connections at once and finish what they serve (launcher drain).
    ctx.executor.apply(DeleteWorkers(pm2.home_dir / "rpc.sock", old_ids, wait=False))


def put_back_held(ctx: Context, pm2: Pm2, previous: str | None, failed: str, leaving: frozenset[int]) -> None:
    """Undo a held cut-over whose verify failed (or was interrupted) without a moment where nothing answers:
    ``previous``'s workers start again beside ``failed``'s, held until each answers healthy on its private
    port, then let in while ``failed``'s drain (as a deploy's cut-over; no stability window: it served a
    moment ago). If that does not work, ``put_back`` (switch, reload). Raises RollbackError."""
    name = ctx.config.app.name
    if previous is not None and ctx.paths.held_state_file.exists():
        # Stopped between the approval and the old workers' deletion: they never stopped serving.
        with ctx.reporter.step(f"put {previous} back: its workers serve on, {failed}'s are deleted (they drain)",
                               StepName.ROLLBACK):
            switch_to(ctx, previous)
            purge_workers(ctx, pm2, lambda worker: worker.pm_id not in leaving)
            ctx.executor.apply(Remove(ctx.paths.held_state_file))
        ctx.log.append("rolled_back", previous, **{"from": failed})
        pm2.save(required=False)
        return
    release_dir = ctx.paths.release_dir(previous) if previous else None
    failing = [worker for worker in pm2.workers(name) if worker.pm_id not in leaving]
    if (previous is None or release_dir is None or not is_complete(release_dir) or not holds_until_approved(release_dir)
            or not failing):
        wait_until_gone(ctx, pm2, leaving)
        put_back(ctx, pm2, previous, failed=failed)
        return
    failing_ids = tuple(worker.pm_id for worker in failing)
    failing_pids = {worker.pid for worker in failing}
    layout = layout_of(release_dir) or ReleaseLayout(release_dir)
    logs = _LogMarks(ctx)
    try:
        with ctx.reporter.step(f"put {previous} back: its workers start beside {failed}'s, are let in once healthy",
                               StepName.ROLLBACK):
            new_workers = _hold(ctx, pm2, previous, failed, failing_ids, layout, logs, reapprove=True, stable_for=0,
                                others=leaving)
            _cut_over(ctx, pm2, previous, layout, frozenset(w.pm_id for w in new_workers), failing_ids, put_back=True)
            verify(ctx, pm2, previous, failing_pids, leaving=leaving | frozenset(failing_ids))
    except NextdeployError as exc:
        ctx.reporter.info(f"{previous} did not come back beside {failed} ({exc.message}); putting it back by a reload")
        gone = leaving | frozenset(failing_ids)  # cut over: `failed`'s workers were deleted, they drain
        if ctx.paths.held_state_file.exists():  # not cut over: its held workers go, `failed` serves meanwhile
            _reject(ctx, pm2, previous, failed, set(gone), failing_pids)  # (the leaving ones drain on)
            gone = leaving
        approve(ctx, previous, again=True)
        wait_until_gone(ctx, pm2, gone)
        put_back(ctx, pm2, previous, failed=failed)
        return
    ctx.log.append("rolled_back", previous, **{"from": failed})
    pm2.save(required=False, leaving=leaving | frozenset(failing_ids))


class _LogMarks:
    """Where the app's PM2 logs ended before the new workers started: what they wrote is read from there."""

    def __init__(self, ctx: Context) -> None:
        name = ctx.config.app.name
        self.error_log = ctx.paths.pm2_error_log(name)
        self.out_log = ctx.paths.pm2_out_log(name)
        self.error_offset = file_size(self.error_log)
        self.out_offset = file_size(self.out_log)

    def lines(self) -> list[str]:
        return written_since(self.error_log, self.error_offset, since="the new workers started")

    def text(self) -> str:
        """What both logs got since (at most the last 64 KiB of each)."""
        return _read_from(self.out_log, self.out_offset) + _read_from(self.error_log, self.error_offset)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(offset if offset <= size else 0, size - 64 * 1024))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _spawn(ctx: Context, socket: Path, like: tuple[int, ...]) -> None:
    if not like:
        return
    result = ctx.executor.apply(SpawnWorkers(socket, like))
    if not result.ok:
        raise PreflightError(f"PM2 did not start the new workers: {result.stderr}",
                             hint=f"see `nextdeploy status`; {STILL_SERVING}")


def _window(ctx: Context, pm2: Pm2, layout: ReleaseLayout, old_ids: set[int], spawned: float,
            logs: _LogMarks, spawn_rest: Callable[[], None], stable_for: float | None = None) -> list[Worker]:
    """Watch the new workers until the release has answered healthy for ``stable_for`` s from its first
    good answer (as the preflight does: one worker's), every new worker answers healthy, and none exited or
    restarted. Starts the other new workers (``spawn_rest``) once the first answers. Raises PreflightError.
    What to look at when, and what it means: ``window.HeldWindow``; here the looking."""
    config = ctx.config
    health = release_health(config.health, layout.release_dir)
    if stable_for is not None:
        health = health.model_copy(update={"stable_for": stable_for})
    watch = HeldWindow(StabilityWindow(health.stable_for, health.timeout, spawned), frozenset(old_ids),
                       config.server.instances)
    while True:
        held = _held_ports(layout)
        if watch.begin(time.monotonic(), held.keys()):
            watch.listed(pm2.workers(config.app.name))
        for worker, port in watch.due(held):
            problem = health_problem(http_get("127.0.0.1", port, health.path, health.request_timeout), health)
            if watch.probed(worker, problem, time.monotonic()):
                assert problem is not None
                time.sleep(EXIT_GRACE)  # a worker on its way out: let its exit show, for the clearer message
                again = next((w for w in pm2.workers(config.app.name) if w.pm_id == worker.pm_id), None)
                raise watch.unhealthy(worker, again, problem, time.monotonic())
        if watch.rest_due(spawned):
            spawn_rest()
            checkpoint("held")  # every new worker asked for
        step = watch.next(time.monotonic())
        if step is Next.SMOKE:
            run_smoke(health, watch.smoke_port())  # raises PreflightError
        elif step is Next.DONE:
            fatal = next((marker for marker in FATAL_OUTPUT_MARKERS if marker in logs.text()), None)
            if fatal:
                raise fatal_output("the new workers", fatal, f"{INCLUDE_FIX} ({STILL_SERVING})")
            return watch.new
        elif step is Next.TIMED_OUT:
            raise watch.window.not_healthy(watch.problem, launcher_reason(logs.text()),
                                           health_hint(health, layout.release_dir))
        elif step is Next.WAIT:
            time.sleep(watch.pause(time.monotonic()))


def _held_ports(layout: ReleaseLayout) -> dict[int, int]:
    """pid -> private port of every held worker (``held/<pid>``, written by launcher.cjs once it answers)."""
    ports: dict[int, int] = {}
    try:
        entries = list(layout.held_dir.iterdir())
    except OSError:
        return ports  # none answered yet
    for entry in entries:
        try:
            ports[int(entry.name)] = int(entry.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue  # being written, or removed meanwhile
    return ports


def _wait_serving(ctx: Context, pm2: Pm2, layout: ReleaseLayout, new_ids: frozenset[int]) -> None:
    """Until every approved worker listens on the public port: its launcher removes ``held/<pid>`` then.
    (Not PM2's 'online': PM2 marks a worker online at ``listen_timeout`` even if it never said 'ready'.)

    Also, for at most 1 s, for an old worker that PM2 restarted during the window (from `current`: held on
    the new release): deleted before its 'ready', PM2 7 would fork it again outside its list."""
    deadline = time.monotonic() + OPEN_TIMEOUT
    others_until = time.monotonic() + 1.0
    while True:
        workers = pm2.workers(ctx.config.app.name)
        held = [w for w in workers if w.pid and (layout.held_dir / str(w.pid)).exists()]
        waiting = [w.pm_id for w in held if w.pm_id in new_ids]
        if not waiting and (len(held) == 0 or time.monotonic() >= others_until):
            return
        if waiting and time.monotonic() >= deadline:
            raise Pm2Error(f"worker(s) {', '.join(map(str, waiting))} did not open the public port after the "
                           f"approval within {OPEN_TIMEOUT:g} s")
        time.sleep(0.01)


def _reject(ctx: Context, pm2: Pm2, release_id: str, previous: str | None, old_ids: set[int],
            old_pids: set[int]) -> None:
    """Delete the held workers, put ``current`` back. An old worker that PM2 restarted during the window
    started from the new release (held, not serving): it is restarted again, from the old one."""
    name = ctx.config.app.name
    with ctx.reporter.step(f"reject {release_id}: delete its held workers (they never took a request)",
                            StepName.REJECT):
        if previous is not None:
            switch_to(ctx, previous)  # first: a worker PM2 starts from now on runs the old release
        releases_dir = ctx.paths.releases_dir
        purge_workers(ctx, pm2, lambda worker: worker.pm_id not in old_ids,
                      unserved=lambda worker: worker.release_in(releases_dir) == release_id)
        ctx.executor.apply(Remove(ctx.paths.held_state_file))
        restarted = [worker.pm_id for worker in pm2.workers(name)
                     if worker.pm_id in old_ids and worker.pid not in old_pids]
        if restarted and previous is not None:
            ctx.reporter.info(f"worker(s) {', '.join(map(str, restarted))} restarted during the window; "
                              f"restarting them on {previous}")
            start_or_reload(ctx, pm2)


def _state(release_id: str, previous: str | None, old_ids: tuple[int, ...], reapprove: bool = False) -> str:
    return json.dumps({"release": release_id, "previous": previous, "old_ids": list(old_ids),
                       "reapprove": reapprove}) + "\n"


def read_held_state(path: Path) -> tuple[str, str | None, frozenset[int], bool] | None:
    """``held.json`` (written by ``_hold``, removed at the cut-over): the release held, the one it replaces,
    the old workers' ids, whether its approval was taken back. None when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return (str(data["release"]), data.get("previous"), frozenset(int(i) for i in data["old_ids"]),
                data.get("reapprove") is True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


__all__ = ["activate_held", "approve", "held_cutover_ids", "put_back_held", "read_held_state"]

