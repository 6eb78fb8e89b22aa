"""`nextdeploy status`: the live release, its health, and each PM2 worker."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, context_for, debug_option, json_option
from nextdeploy.core.checks import release_health
from nextdeploy.core.config import load_config
from nextdeploy.nextjs.envcheck import built_node_problem
from nextdeploy.procedures.status import host_status


@click.command("status")
@config_option
@json_option
@debug_option
def status_command(config_path: Path, json_mode: bool) -> None:
    """The live release, its health, and each PM2 worker."""
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.commands import fleet_status

        fleet_status(config, config_path.read_bytes(), json_mode)
        return
    ctx = context_for(config, json_mode)
    report = host_status(ctx)
    if json_mode:
        ctx.reporter.result(report.to_json())
        return
    current, workers, lost, draining = report.current, report.workers, report.lost_workers, report.draining_workers
    info = ctx.reporter.info
    info(f"app {config.app.name} at {report.url}  root {ctx.paths.root}")
    info(f"current release: {current or 'none'}")
    if report.deploy_running:
        running = report.deploy_running
        info(f"a deploy is running: pid {running['pid']} since {running['started_at']} (a rollback does not "
             "wait for it)")
    health_path = release_health(config.health, ctx.paths.release_dir(current)).path if current else config.health.path
    info(f"health {health_path}: {'ok' if report.health_problem is None else report.health_problem}")
    node = report.node
    mismatch = built_node_problem(node["pm2"], node["built_with"])
    if mismatch:
        ctx.reporter.warn(mismatch)
    elif node["pm2"]:
        info(f"node {node['pm2']} (PM2's daemon runs every worker on it)")
    from rich.table import Table

    table = Table("pm id", "pid", "status", "restarts", "memory", "release")
    for w in workers:
        table.add_row(str(w.pm_id), str(w.pid), w.status, str(w.restarts), f"{w.memory_mb:.1f} MB", w.release or "?")
    if workers:
        ctx.reporter.console.print(table)
    elif report.pm2_daemon_running:
        info("no PM2 workers for this app")
    else:
        info(str(report.pm2_problem))
    if draining:
        info(f"{len(draining)} old worker(s) draining: PM2 is stopping them (pid "
             f"{', '.join(map(str, draining))}); they take no new connections")
    if lost:
        ctx.reporter.warn(f"{len(lost)} worker(s) of a release here run outside PM2's list (pid "
                          f"{', '.join(map(str, lost))}) and may still take connections: `nextdeploy stop`, "
                          "`start` or the next deploy stops them")
    if report.leftover_processes:
        ctx.reporter.warn(f"{len(report.leftover_processes)} process(es) an interrupted deploy started still run "
                          f"(pid {', '.join(map(str, report.leftover_processes))}: its preflight server or build): "
                          "the next deploy, `rollback` or `start` stops them")
    if current and not workers and not lost:
        info(f"nothing serves {current}: `nextdeploy start` starts it again (no build)")
    if report.startup_on_boot:
        info("PM2 starts on boot: yes (pm2 startup is configured)")
    else:
        info("PM2 starts on boot: not configured; run `pm2 startup` once and follow its instructions")
