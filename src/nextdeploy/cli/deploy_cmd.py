"""`nextdeploy deploy`, `nextdeploy rollback` and `nextdeploy start`."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import (
    config_option,
    context_for,
    debug_option,
    json_option,
    lock_timeout_option,
    make_context,
)
from nextdeploy.core.config import load_config
from nextdeploy.core.ui import Reporter
from nextdeploy.procedures.deploy import DeployResult, deploy
from nextdeploy.procedures.dryrun import print_deploy_plan
from nextdeploy.procedures.lifecycle import start
from nextdeploy.procedures.rollback import rollback


@click.command("deploy")
@config_option
@json_option
@lock_timeout_option
@debug_option
@click.option("--dry-run", is_flag=True, help="Print what would be done on the host, change nothing.")
def deploy_command(config_path: Path, json_mode: bool, lock_timeout: float, dry_run: bool) -> None:
    """Build, check and put a new release live with zero downtime.

    Builds in a fresh directory, assembles an immutable release, proves it healthy on a private
    port, then switches `current`, reloads the PM2 workers (each old one serves until its successor is
    ready) and verifies every worker.
    Any failure before the switch changes nothing live; after it, the previous release is put back.
    """
    if not dry_run and _fleet_deploy(config_path, json_mode, lock_timeout):
        return
    if dry_run and _fleet_dry_run(config_path, json_mode):
        return
    ctx = make_context(config_path, json_mode, dry_run=dry_run)
    if dry_run:
        print_deploy_plan(ctx)
        return
    result = deploy(ctx, lock_timeout=lock_timeout)
    _report(ctx.reporter, result, "deployed")


@click.command("rollback")
@config_option
@json_option
@lock_timeout_option
@debug_option
@click.option("--to", "target", metavar="ID", callback=lambda _ctx, _param, value: _release_id(value),
              help="The release to go back to (default: the previous good one).")
def rollback_command(config_path: Path, json_mode: bool, lock_timeout: float, target: str | None) -> None:
    """Put an earlier good release back instantly (no rebuild), verified like a deploy."""
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.rollback import run_fleet_rollback

        reporter = Reporter(json_mode=json_mode)
        done = run_fleet_rollback(config, config_path.read_bytes(), reporter, target, lock_timeout)
        reporter.info(f"rolled back every host to {done.release} in {done.seconds:.1f} s")
        reporter.result({**done.to_json(), "steps": reporter.steps_json()})
        return
    ctx = context_for(config, json_mode)
    result = rollback(ctx, to=target, lock_timeout=lock_timeout)
    _report(ctx.reporter, result, "rolled back to")


@click.command("start")
@config_option
@json_option
@lock_timeout_option
@debug_option
def start_command(config_path: Path, json_mode: bool, lock_timeout: float) -> None:
    """Serve the live release again (after `stop`, a reboot without `pm2 startup`, a killed PM2 daemon).

    No build, no switch: starts the live release's PM2 workers and verifies them like a deploy. Does
    nothing when the live release already serves.
    """
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.commands import fleet_start

        fleet_start(config, config_path.read_bytes(), json_mode, lock_timeout)
        return
    ctx = context_for(config, json_mode)
    result = start(ctx, lock_timeout=lock_timeout)
    if result.already_serving:
        ctx.reporter.info(f"{result.release} is serving already; nothing to do")
    else:
        ctx.reporter.info(f"started {result.release} in {result.seconds:.1f} s")
    ctx.reporter.result({**result.to_json(), "steps": ctx.reporter.steps_json()})


def _fleet_deploy(config_path: Path, json_mode: bool, lock_timeout: float) -> bool:
    """With [[hosts]] in the config: the fleet deploy (``fleet.deploy``), True once done; False without hosts."""
    config = load_config(config_path)
    if not config.hosts:
        return False
    from nextdeploy.fleet.deploy import fleet_deploy

    reporter = Reporter(json_mode=json_mode)
    result = fleet_deploy(config, config_path.read_bytes(), reporter, lock_timeout)
    where = f" on {result.built_on.host}" if result.built_on else ""
    reporter.info(f"deployed {result.release} to {len(result.hosts or result.shipped)} host(s) "
                  f"(previous: {result.previous or 'none'}); build{where} {result.build_seconds:.1f} s, "
                  f"total {result.seconds:.1f} s")
    reporter.result({**result.to_json(), "steps": reporter.steps_json()})
    return True


def _release_id(value: str | None) -> str | None:
    # `--to "$ID"` with ID unset must not mean "the previous release": say so instead.
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a release id (see `nextdeploy releases`), or leave --to out to go "
                                 "back to the previous good release")
    return value


def _report(reporter: Reporter, result: DeployResult, verb: str) -> None:
    reporter.info(
        f"{verb} {result.release} (previous: {result.previous or 'none'}); "
        f"activation {result.activation_seconds:.1f} s, total {result.seconds:.1f} s"
    )
    if result.removed:
        reporter.info(f"removed old releases: {', '.join(result.removed)}")
    reporter.result({**result.to_json(), "steps": reporter.steps_json()})


def _fleet_dry_run(config_path: Path, json_mode: bool) -> bool:
    """With [[hosts]]: what a fleet deploy would run on each host (``fleet.commands``), True once shown."""
    config = load_config(config_path)
    if not config.hosts:
        return False
    from nextdeploy.fleet.commands import fleet_dry_run

    fleet_dry_run(config, json_mode)
    return True
