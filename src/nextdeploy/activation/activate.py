"""Putting a release live: atomic switch, PM2 start or reload, verification, automatic rollback.

Never trusts ``pm2 reload``'s exit code (it exits 0 even when every new worker crashed). After the
switch each worker must be online, have a new pid, run from the new release (``/proc/<pid>/cwd``),
keep a flat restart count, and the public port must answer healthy from the new release.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.activation import failure
from nextdeploy.activation.window import GIVEN_UP
from nextdeploy.core.checks import release_health
from nextdeploy.core.context import Context
from nextdeploy.core.errors import NextdeployError, Pm2Error, RollbackError
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.manifest import is_complete
from nextdeploy.core.steps import StepName
from nextdeploy.host.files import remove_path
from nextdeploy.host.probe import health_problem, http_get, local_address
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans.ops import Op, ReloadWorkers, Remove, StopProcesses, Symlink, WriteFile
from nextdeploy.pm2.client import Pm2, Worker
from nextdeploy.release.secrets import protect_pm2_dump, secret_files, secret_values

VERIFY_TIMEOUT = 20.0
RESTART_WINDOW = 1.0  # the preflight already watched for late crashes
RELOAD_LOCK_WAIT = 40.0  # PM2's reload lock expires after 30 s
POLL = 0.1  # a listing costs ~2 ms on the daemon socket
# How long after the reload the public port may still answer from an old worker closing its listener.
OLD_LISTENER_GRACE = 2.0
# How long after `pm2 delete` a worker PM2 was restarting can still appear (its fork follows the exit).
LOST_WORKER_WAIT = 0.5


@dataclass
class ActivationReport:
    release: str
    seconds: float
    workers: list[Worker] = field(default_factory=list)


def current_release(ctx: Context) -> str | None:
    """The id ``current`` points at, or None."""
    link = ctx.paths.current_link
    if not link.is_symlink():
        return None
    return Path(str(link.readlink())).name


def ecosystem_ops(ctx: Context) -> list[Op]:
    """The ecosystem file PM2 loads (0600) and the app's log files, written before every switch."""
    source = pm2_plan.ecosystem_source(ctx.config, ctx.paths, secret_files(ctx.paths))
    return [WriteFile(ctx.paths.ecosystem_file, source, mode=0o600), *pm2_plan.log_ops(ctx.config, ctx.paths)]


def switch_op(ctx: Context, release_id: str) -> Symlink:  # relative: the root stays relocatable
    return Symlink(f"releases/{release_id}", ctx.paths.current_link)


def write_ecosystem(ctx: Context) -> None:
    ctx.executor.apply_all(ecosystem_ops(ctx))


def switch_to(ctx: Context, release_id: str) -> None:
    ctx.executor.apply(switch_op(ctx, release_id))


def start_or_reload(ctx: Context, pm2: Pm2, workers: list[Worker] | None = None) -> None:
    """Start the app the first time; reload it afterwards. Idempotent.

    ``workers``: the app's PM2 processes if the caller just listed them.
    """
    name, ecosystem = ctx.config.app.name, ctx.paths.ecosystem_file
    settle(ctx)  # PM2 refuses to reload a worker whose previous reload is still stopping the old one
    if workers is None:
        workers = pm2.workers(name)
    if not workers:
        pm2.check(pm2_plan.start_argv(pm2.binary, ecosystem, name), "start the app")
        _record_applied(ctx)
        return
    if _reload_in_place(ctx, pm2):
        return
    _reload(ctx, pm2)
    if len(workers) != ctx.config.server.instances:
        pm2.check(pm2_plan.scale_argv(pm2.binary, name, ctx.config.server.instances), "scale the app")
    _record_applied(ctx)


def _reload_in_place(ctx: Context, pm2: Pm2) -> bool:
    """Replace the workers ``[server] reload_at_once`` at a time when nothing but the release changes (a
    rollback, a repair; a code-only deploy goes by the held cut-over instead, ``held.py``); False when the
    ecosystem file must be (re)applied, or if this failed."""
    ids = release_only_change(ctx, pm2)
    if not ids:
        return False
    config = ctx.config
    # One worker's boot to 'ready' plus the old worker's drain, with room to spare.
    timeout = (config.server.listen_timeout + config.server.kill_timeout) / 1000 + 10
    # The old workers' drain goes on during verify (they no longer take connections); see settle().
    op = ReloadWorkers(pm2.home_dir / "rpc.sock", ids, config.server.reload_at_once, timeout, until_serving=True)
    result = ctx.executor.apply(op)
    if result.ok:
        return True
    ctx.reporter.info(f"reloading through the PM2 daemon failed ({result.stderr}); reloading with pm2 instead")
    return False


def release_only_change(ctx: Context, pm2: Pm2) -> tuple[int, ...] | None:
    return release_only_change_in(ctx, pm2.processes, pm2.env)


def release_only_change_in(ctx: Context, processes: Callable[[], list[dict[str, Any]]],
                           pm2_env: dict[str, str]) -> tuple[int, ...] | None:
    """The ids of the app's workers (from ``processes``) if replacing them changes only their release."""
    config, paths = ctx.config, ctx.paths
    secrets = secret_values(paths)
    if secrets is None:
        return None
    source = pm2_plan.ecosystem_source(config, paths, secret_files(paths))
    try:
        applied: str | None = paths.ecosystem_applied_file.read_text(encoding="utf-8").strip()
    except OSError:
        applied = None
    app_env = {**pm2_plan.ecosystem_env(config), **secrets}
    return pm2_plan.in_place_reload_ids(processes(), config.app.name, config.server.instances, source,
                                        applied, app_env, pm2_env)


def settle(ctx: Context) -> None:
    """Wait until the old workers of the last reload have drained and exited. Their new workers were
    verified already, so a late problem is only worth a warning."""
    for problem in ctx.executor.settle():
        ctx.reporter.warn(f"PM2 reported after the reload: {problem}")


def stop_lost_workers(ctx: Context, pm2: Pm2, after_delete: bool = False) -> None:
    """Stop the workers PM2's daemon forked and lost track of (``Pm2.lost_workers``): they serve a release
    outside PM2's list, where no reload, stop or verify of ours would see them.

    ``after_delete``: right after a `pm2 delete` of workers that may have been crash-looping; a restart PM2
    had begun can still fork its worker a moment later."""
    if after_delete:
        time.sleep(LOST_WORKER_WAIT)
    lost = pm2.lost_workers(ctx.paths.releases_dir)
    if not lost:
        return
    with ctx.reporter.step(f"stop {len(lost)} worker(s) PM2 lost track of (pid {', '.join(map(str, lost))})",
                            StepName.STOP_LOST):
        ctx.executor.apply(StopProcesses(tuple(lost), ctx.config.server.kill_timeout / 1000))


def _record_applied(ctx: Context) -> None:
    """Remember which ecosystem file PM2 loaded (the one on disk), for ``_reload_in_place``."""
    try:
        loaded = ctx.paths.ecosystem_file.read_text(encoding="utf-8")
    except OSError:
        ctx.executor.apply(Remove(ctx.paths.ecosystem_applied_file))
        return
    ctx.executor.apply(WriteFile(ctx.paths.ecosystem_applied_file, pm2_plan.ecosystem_digest(loaded) + "\n"))


def _reload(ctx: Context, pm2: Pm2) -> None:
    """``pm2 reload``, waiting out an earlier reload that an interrupted run left in progress.

    PM2 refuses a reload for up to 30 s while its reload lock is held (by a pm2 client that may
    still be finishing). We hold our own deploy lock, so waiting is safe; ``--force`` is not:
    overlapping reloads can orphan a worker running stale code (pm2#2951).
    """
    argv = pm2_plan.reload_argv(pm2.binary, ctx.paths.ecosystem_file, ctx.config.app.name)
    deadline = time.monotonic() + RELOAD_LOCK_WAIT
    while True:
        result = pm2.run(argv)
        if result.ok:
            return
        if "Reload already in progress" not in result.stdout + result.stderr or time.monotonic() >= deadline:
            pm2.check(argv, "reload the app")  # raises with PM2's message, or succeeds on this last try
            return
        ctx.reporter.info("waiting for an earlier PM2 reload to finish")
        time.sleep(2)


def activate(ctx: Context, pm2: Pm2, release_id: str, previous: str | None,
             event: str = "activated") -> ActivationReport:
    """Switch to ``release_id`` and verify it; on failure put ``previous`` back and raise ActivationError."""
    started = time.monotonic()
    old_workers = pm2.workers(ctx.config.app.name)
    old_pids = {worker.pid for worker in old_workers}
    write_ecosystem(ctx)
    protect_pm2_dump(Path(pm2.env["PM2_HOME"]))  # before `pm2 save` writes the key into it
    error_log = ctx.paths.pm2_error_log(ctx.config.app.name)
    error_log_offset = file_size(error_log)
    ctx.log.append("switching", release_id, **{"from": previous})
    try:
        with ctx.reporter.step(f"switch current -> {release_id}", StepName.SWITCH):
            switch_to(ctx, release_id)
        checkpoint("switched")
        with ctx.reporter.step(*(("start workers", StepName.START) if not old_pids else
                                 ("reload workers", StepName.RELOAD))):
            start_or_reload(ctx, pm2, old_workers)
        with ctx.reporter.step("verify every worker runs the new release", StepName.VERIFY):
            workers = verify(ctx, pm2, release_id, old_pids, during_watch=lambda: _save(ctx, pm2))
    except (NextdeployError, KeyboardInterrupt) as exc:
        # Ctrl-C, SIGTERM or SIGHUP here undoes the switch too: the new release was never verified.
        failure.after_switch(ctx, exc, release_id, previous, lambda: put_back(ctx, pm2, previous, failed=release_id),
                             details=lambda: written_since(error_log, error_log_offset))
    extra = {"from": previous} if event == "rolled_back" else {}
    ctx.log.append(event, release_id, **extra)
    return ActivationReport(release_id, time.monotonic() - started, workers)


_PM2_TIME_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d: ")
_STACK_FRAME = re.compile(r"^\s+at \S")


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def written_since(log_file: Path, offset: int, lines: int = 5, since: str = "the switch") -> list[str]:
    """The last lines the workers wrote to ``log_file`` after ``offset``: why a worker did not come up
    (a port in use, a missing env var) is there, and the error line alone would only say it is "launching".
    Stack frames are left out: a crash loop's last lines would be nothing else."""
    try:
        with log_file.open("rb") as log:
            size = os.fstat(log.fileno()).st_size
            start = offset if offset <= size else 0  # flushed since (`pm2 flush`): all of it is new
            log.seek(max(start, size - 16 * 1024))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # A crash loop writes the same line again and again: each line once (PM2's time stamp aside), counted.
    counts: dict[str, int] = {}
    for line in text.splitlines():
        message = _PM2_TIME_STAMP.sub("", line).rstrip()
        if message and not _STACK_FRAME.match(message):
            counts[message] = counts.pop(message, 0) + 1  # re-inserted: ordered by last appearance
    tail = [f"  | {message}" + (f"  (x{count})" if count > 1 else "") for message, count in counts.items()][-lines:]
    return [f"the workers' error log since {since} ({log_file}):", *tail] if tail else []


def _save(ctx: Context, pm2: Pm2) -> None:
    """``pm2 save`` so a reboot restores this release. Runs while verify watches for restarts (it would
    only wait anyway); if the watch then fails, the rollback saves the previous release's list again."""
    pm2.save()


def put_back(ctx: Context, pm2: Pm2, previous: str | None, failed: str) -> None:
    """Undo a failed switch. Raises RollbackError if the previous release cannot be restored."""
    if previous is None or not is_complete(ctx.paths.release_dir(previous)):
        with ctx.reporter.step("stop the app (nothing earlier to roll back to)", StepName.STOP):
            pm2.run(pm2_plan.delete_argv(pm2.binary, ctx.config.app.name))
            remove_path(ctx.paths.current_link)
        stop_lost_workers(ctx, pm2, after_delete=True)
        return
    old_pids = {worker.pid for worker in pm2.workers(ctx.config.app.name)}
    try:
        with ctx.reporter.step(f"roll back to {previous}", StepName.ROLLBACK):
            switch_to(ctx, previous)
            try:
                start_or_reload(ctx, pm2)
                verify(ctx, pm2, previous, old_pids, require_new_pids=False)
            except NextdeployError as exc:
                # Workers of the failed release that crash-loop can make `pm2 reload` skip some (PM2: "process
                # already started") or leave them errored. Nothing healthy is serving then: start afresh.
                ctx.reporter.info(f"the reload did not bring {previous} back ({exc.message}); restarting the app")
                settle(ctx)
                pm2.run(pm2_plan.delete_argv(pm2.binary, ctx.config.app.name))
                stop_lost_workers(ctx, pm2, after_delete=True)
                start_or_reload(ctx, pm2, workers=[])
                verify(ctx, pm2, previous, set(), require_new_pids=False)
    except NextdeployError as exc:
        raise RollbackError(
            f"release {failed} failed and the rollback to {previous} failed too: {exc.message}",
            hint="check `nextdeploy status` and `nextdeploy logs` now",
        ) from None
    ctx.log.append("rolled_back", previous, **{"from": failed})
    pm2.save(required=False)


def verify(ctx: Context, pm2: Pm2, release_id: str, old_pids: set[int], require_new_pids: bool = True,
           during_watch: Callable[[], None] | None = None, leaving: frozenset[int] = frozenset()) -> list[Worker]:
    """Wait until every worker is online on ``release_id``, then probe the public port while watching restarts.

    ``during_watch`` runs inside the restart-watch window, which is otherwise spent sleeping. ``leaving``:
    the ids of workers being deleted (the old ones of a held cut-over), not counted.
    """
    config = ctx.config
    deadline = time.monotonic() + VERIFY_TIMEOUT
    while True:
        workers = [worker for worker in pm2.workers(config.app.name) if worker.pm_id not in leaving]
        problem = _workers_problem(ctx, workers, release_id, old_pids if require_new_pids else set())
        if problem is None:
            break
        if time.monotonic() >= deadline or any(worker.status in GIVEN_UP for worker in workers):
            raise Pm2Error(f"workers not running release {release_id}: {problem}")
        time.sleep(POLL)
    # Every worker must survive its first RESTART_WINDOW s. The window counts from each worker's start,
    # so the workers replaced early in the reload are already past it; the public probe and
    # ``during_watch`` run while the youngest worker finishes its window.
    youngest = min((worker.age if worker.age is not None else 0.0) for worker in workers)
    window_ends = time.monotonic() + max(0.0, RESTART_WINDOW - youngest)
    _probe_public_port(ctx, release_id)
    if during_watch is not None:
        during_watch()
    time.sleep(max(0.0, window_ends - time.monotonic()))
    later = {worker.pm_id: worker for worker in pm2.workers(config.app.name) if worker.pm_id not in leaving}
    for worker in workers:
        again = later.get(worker.pm_id)
        if again is None or again.pid != worker.pid or again.restarts != worker.restarts:
            raise Pm2Error(f"worker {worker.pm_id} restarted within {RESTART_WINDOW} s of starting (crash loop)")
    return list(later.values())


def serving_problem(ctx: Context, workers: list[Worker], release_id: str) -> str | None:
    """Why ``release_id`` is not serving as it should right now (its workers, the public port), or None."""
    problem = _workers_problem(ctx, workers, release_id, set())
    if problem is not None:
        return problem
    config = ctx.config
    health = release_health(config.health, ctx.paths.release_dir(release_id))
    result = http_get(local_address(config.server.hostname), config.server.port, health.path, health.request_timeout)
    problem = health_problem(result, health)
    if problem is not None:
        return f"the public port {config.server.port} is not healthy: {problem}"
    if result.release not in (None, release_id):
        return f"port {config.server.port} answered from release {result.release}"
    return None


def start_live(ctx: Context, pm2: Pm2, release_id: str, workers: list[Worker]) -> ActivationReport:
    """Serve the live release again without switching anything (after `nextdeploy stop`, a reboot without
    `pm2 startup`, a killed PM2 daemon): start or reload its workers, verify them, save PM2's list.
    Raises Pm2Error with what the workers wrote if it does not come up; PM2's state is left as it is."""
    started = time.monotonic()
    error_log = ctx.paths.pm2_error_log(ctx.config.app.name)
    error_log_offset = file_size(error_log)
    try:
        with ctx.reporter.step(f"start the live release {release_id}", StepName.START_LIVE):
            write_ecosystem(ctx)
            protect_pm2_dump(Path(pm2.env["PM2_HOME"]))
            start_or_reload(ctx, pm2, workers)
            verified = verify(ctx, pm2, release_id, set(), require_new_pids=False, during_watch=lambda: _save(ctx, pm2))
    except Pm2Error as exc:
        raise Pm2Error(
            f"the live release {release_id} did not start: {exc.message}",
            hint="see `nextdeploy logs`; `nextdeploy rollback` puts the previous good release back, "
                 "`nextdeploy stop` stops PM2 retrying",
            details=exc.details + written_since(error_log, error_log_offset, since="the start"),
        ) from None
    return ActivationReport(release_id, time.monotonic() - started, verified)


def _probe_public_port(ctx: Context, release_id: str) -> None:
    """The public port answers healthy, from ``release_id``: 2 answers per worker in a row (round-robin
    reaches every worker). An old worker of an in-place reload may still answer for a moment: PM2 tells it
    to stop on its successor's 'ready', and it closes its listener a few ms later (``ReloadWorkers``)."""
    config = ctx.config
    health = release_health(config.health, ctx.paths.release_dir(release_id))
    host = local_address(config.server.hostname)
    others_until = time.monotonic() + OLD_LISTENER_GRACE
    in_a_row = 0
    while in_a_row < 2 * config.server.instances:
        result = http_get(host, config.server.port, health.path, health.request_timeout)
        # An old worker is judged by whom it is, not by its health: its release may answer elsewhere (basePath).
        if result.release is not None and result.release != release_id:
            if time.monotonic() >= others_until:
                raise Pm2Error(f"port {config.server.port} answered from release {result.release}, not {release_id}")
            in_a_row = 0
            time.sleep(0.02)
            continue
        problem = health_problem(result, health)
        if problem:
            raise Pm2Error(f"the public port {config.server.port} is not healthy: {problem}")
        in_a_row += 1


def _workers_problem(ctx: Context, workers: list[Worker], release_id: str, old_pids: set[int]) -> str | None:
    expected = ctx.config.server.instances
    if len(workers) != expected:
        return f"{len(workers)} workers, expected {expected}"
    for worker in workers:
        if worker.status != "online":
            return f"worker {worker.pm_id} is {worker.status}"
        if worker.pid in old_pids:
            return f"worker {worker.pm_id} still has its old pid {worker.pid}"
        running = worker.release_in(ctx.paths.releases_dir)
        if running != release_id:
            return f"worker {worker.pm_id} (pid {worker.pid}) runs from {running or worker.cwd}"
    return None
