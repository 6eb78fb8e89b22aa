"""Deleting the app's PM2 workers for good, and waiting for them to be gone: a rejected release's held workers,
the leftovers of a killed run, the old workers of a held cut-over draining. PM2 7 forks a worker again when it
is deleted at the wrong moment (``purge_workers``): deleting means looking again until none is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nextdeploy.activation.activate import stop_lost_workers
from nextdeploy.core.context import Context
from nextdeploy.plans.ops import DeleteWorkers, StopProcesses
from nextdeploy.pm2.client import Pm2, Worker

POLL = 0.02  # how often PM2's list is read again while workers leave it
PURGE_ROUNDS = 4  # see purge_workers: 2 were needed at most in the bench's crash loops


def delete_workers(ctx: Context, pm2: Pm2, ids: list[int]) -> None:
    """Delete the workers by id through the daemon and wait until each has stopped (see ``purge_workers``)."""
    if not ids:
        return
    timeout = ctx.config.server.kill_timeout / 1000 + 5
    if not ctx.executor.apply(DeleteWorkers(pm2.home_dir / "rpc.sock", tuple(ids), wait=True, timeout=timeout)).ok:
        for pm_id in ids:  # no daemon socket: the CLI (an id already gone fails harmlessly)
            pm2.run((pm2.binary, "delete", str(pm_id)))


def purge_workers(ctx: Context, pm2: Pm2, doomed: Callable[[Worker], bool],
                  unserved: Callable[[Worker], bool] = lambda worker: False) -> None:
    """Delete the app's workers ``doomed`` picks until none is left.

    PM2 7 forks a worker again when it is deleted before it told PM2 'ready' (a booting or crash-looping
    worker; a held one says 'ready' to PM2 while it holds): its exit handler marks it online first. The new
    fork lands back in PM2's list under the same id, or outside it. So each round waits until the doomed
    workers are settled (none launching or stopping), deletes them, and looks again; what ran off the list
    is stopped at the end (``stop_lost_workers``). Callers switch `current` back first: a worker forked
    again then runs the old release, says 'ready' within its boot, and goes in the next round.

    ``unserved``: which of them never took a request (a rejected release's): no drain to wait for, they are
    killed at once; PM2 would wait ``kill_timeout`` for one that does not stop on SIGINT (a blocked event
    loop: 10 s by default). A worker forked again from the old release may serve already: deleted, drained."""
    name = ctx.config.app.name
    deadline = time.monotonic() + ctx.config.server.kill_timeout / 1000 + 10
    for _ in range(PURGE_ROUNDS):
        while True:
            listed = [w for w in pm2.workers(name) + pm2.leaving_workers(name) if doomed(w)]
            # A booting worker of the old release is deleted once it said 'ready'; a rejected one at once.
            booting = [w for w in listed if w.status == "stopping" or (w.status == "launching" and not unserved(w))]
            if not booting or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if not listed:
            break
        killed = [w for w in listed if unserved(w)]
        if killed:
            ctx.executor.apply(DeleteWorkers(pm2.home_dir / "rpc.sock", tuple(w.pm_id for w in killed), wait=False))
            ctx.executor.apply(StopProcesses(tuple(w.pid for w in killed if w.pid), grace=0.0))
        delete_workers(ctx, pm2, [w.pm_id for w in listed if w not in killed])
        if killed:
            time.sleep(POLL)  # the daemon sees the exits; the next round waits for what is still stopping
    stop_lost_workers(ctx, pm2, after_delete=True)


def wait_until_gone(ctx: Context, pm2: Pm2, ids: frozenset[int] | None = None) -> None:
    """Wait (up to ``kill_timeout`` + 2 s) until the workers ``ids`` (None: every worker PM2 is stopping)
    have left PM2's list: the old workers of the last held cut-over, draining. A reload, or a count of
    the workers, before then would include them."""
    name = ctx.config.app.name
    deadline = time.monotonic() + ctx.config.server.kill_timeout / 1000 + 2
    while time.monotonic() < deadline:
        if ids is None:
            left = pm2.leaving_workers(name)
        else:
            left = [w for w in pm2.workers(name) + pm2.leaving_workers(name) if w.pm_id in ids]
        if not left:
            return
        time.sleep(POLL)


__all__ = ["delete_workers", "purge_workers", "wait_until_gone"]
