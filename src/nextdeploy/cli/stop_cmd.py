"""`nextdeploy stop`: remove the app from PM2, keeping its releases."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.activation.activate import stop_lost_workers
from nextdeploy.activation.recovery import stop_leftovers
from nextdeploy.cli.options import config_option, debug_option, lock_timeout_option, make_context
from nextdeploy.core.steps import StepName
from nextdeploy.host.lock import DeployLock
from nextdeploy.host.rootmark import ROOT_MARKER
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.procedures.deploy import (
    build_lock_if_free,
    check_app_name,
    open_pm2,
    running_processes,
)


@click.command("stop")
@config_option
@lock_timeout_option
@debug_option
def stop_command(config_path: Path, lock_timeout: float) -> None:
    """Remove the app from PM2. Releases and `current` are kept; `nextdeploy start` serves it again."""
    ctx = make_context(config_path)
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
