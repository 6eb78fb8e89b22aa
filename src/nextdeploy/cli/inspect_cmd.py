"""`nextdeploy releases`, `status`, `stop` and `logs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nextdeploy.activation.activate import current_release
from nextdeploy.cli.options import config_option, debug_option, json_option, lock_timeout_option, make_context
from nextdeploy.core.checks import release_health
from nextdeploy.core.manifest import read_manifest
from nextdeploy.core.releaselog import Status
from nextdeploy.host import applogs
from nextdeploy.nextjs.envcheck import built_node_problem
from nextdeploy.procedures.lifecycle import stop
from nextdeploy.procedures.status import host_status, pm2_as_it_is


@click.command("releases")
@config_option
@json_option
@debug_option
def releases_command(config_path: Path, json_mode: bool) -> None:
    """List releases in the order of the release log, with their status."""
    ctx = make_context(config_path, json_mode)
    current = current_release(ctx)
    rows: list[dict[str, Any]] = []
    for record in ctx.log.records():
        if record.status.value == "removed":
            continue
        manifest = read_manifest(ctx.paths.release_dir(record.id)) or {}
        rows.append({
            "id": record.id,
            "status": record.status.value,
            "current": record.id == current,
            "created_at": record.created_at,
            "activated_at": record.activated_at,
            "revision": record.revision,
            "next_version": manifest.get("next_version"),
            "bytes": manifest.get("bytes"),
            "reason": record.reason,
        })
    if json_mode:
        ctx.reporter.result(rows)
        return
    if not rows:
        ctx.reporter.info("no releases yet: run `nextdeploy deploy`")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("", "id", "status", "created", "revision", "size", "note")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if isinstance(row["bytes"], int | float) and row["bytes"] else ""
        # Text, not markup: a reason may hold "[/]" (an error message, the app's output), the log anything.
        cells = ["*" if row["current"] else "", row["id"],
                 shown_status(str(row["status"]), bool(row["current"])), row["created_at"] or "",
                 str(row["revision"] or "")[:12], size, row["reason"] or ""]
        table.add_row(*(Text(str(cell)) for cell in cells))
    ctx.reporter.console.print(table)


def shown_status(status: str, current: bool) -> str:
    """A release's status in the table: the log's ``active`` (went live, never failed) is ``live`` for the
    current release and ``good`` (a rollback target) for the others; ``--json`` keeps the log's word."""
    if status == Status.ACTIVE:
        return "live" if current else "good"
    return status


@click.command("status")
@config_option
@json_option
@debug_option
def status_command(config_path: Path, json_mode: bool) -> None:
    """The live release, its health, and each PM2 worker."""
    ctx = make_context(config_path, json_mode)
    config = ctx.config
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


@click.command("stop")
@config_option
@lock_timeout_option
@debug_option
def stop_command(config_path: Path, lock_timeout: float) -> None:
    """Remove the app from PM2. Releases and `current` are kept; `nextdeploy start` serves it again."""
    stop(make_context(config_path), lock_timeout)


@click.command("logs")
@config_option
@debug_option
@click.option("-n", "--lines", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many past lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
def logs_command(config_path: Path, lines: int, follow: bool) -> None:
    """The app's logs (time-stamped, kept in <root>/logs outside the releases), across their rotations."""
    ctx = make_context(config_path)
    name = ctx.config.app.name
    streams = [ctx.paths.pm2_out_log(name), ctx.paths.pm2_error_log(name), ctx.paths.pm2_raw_log(name)]
    for path in streams:
        last = applogs.tail(path, lines)
        if last or (path != ctx.paths.pm2_raw_log(name) and path.exists()):
            click.echo(f"==> {path} (last {len(last)} lines, with its rotated files) <==")
            for line in last:
                click.echo(line)
    # Nothing here starts PM2 (every pm2 command starts a daemon): say when nothing runs the app.
    _, _, missing = pm2_as_it_is(ctx)
    if missing is not None:
        click.echo(f"{missing}: nothing writes these logs now" + (", nothing to follow" if follow else "")
                   + "; `nextdeploy start` serves the live release again")
        return
    if follow:
        labels = {path: path.name.removeprefix(f"pm2-{name}.").removesuffix(".log") for path in streams}
        applogs.follow(streams, lambda path, line: click.echo(f"{labels[path]} | {line}"))
