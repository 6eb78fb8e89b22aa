"""`nextdeploy releases`, `status`, `stop` and `logs`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click

from nextdeploy.activate import current_release, stop_lost_workers
from nextdeploy.checks import release_health
from nextdeploy.cli.options import config_option, debug_option, json_option, lock_timeout_option, make_context
from nextdeploy.deploy import check_app_name, open_pm2, running_processes
from nextdeploy.lock import DeployLock
from nextdeploy.manifest import read_manifest
from nextdeploy.nextjs.envcheck import built_node_problem
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.pm2 import startup_configured
from nextdeploy.probe import health_problem, http_get, local_address
from nextdeploy.tools import node_version


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

    table = Table("", "id", "status", "created", "revision", "size", "note")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else ""
        table.add_row("*" if row["current"] else "", row["id"], row["status"], row["created_at"] or "",
                      (row["revision"] or "")[:12], size, row["reason"] or "")
    ctx.reporter.console.print(table)


@click.command("status")
@config_option
@json_option
@debug_option
def status_command(config_path: Path, json_mode: bool) -> None:
    """The live release, its health, and each PM2 worker."""
    ctx = make_context(config_path, json_mode)
    config = ctx.config
    current = current_release(ctx)
    pm2 = open_pm2(ctx)
    # Asking the pm2 command would start a daemon: a status must change nothing.
    daemon_running = pm2.daemon_pid() is not None
    workers = pm2.workers(config.app.name) if daemon_running else []
    draining = pm2.leaving_workers(config.app.name) if daemon_running else []
    lost = pm2.lost_workers(ctx.paths.releases_dir)
    host = local_address(config.server.hostname)
    health = release_health(config.health, ctx.paths.release_dir(current)) if current else config.health
    probe = http_get(host, config.server.port, health.path, health.request_timeout)
    problem = health_problem(probe, health)
    daemon_node = pm2.daemon_node()
    node = {
        "pm2": node_version(daemon_node) if daemon_node and Path(daemon_node).is_file() else None,
        "built_with": (read_manifest(ctx.paths.release_dir(current)) or {}).get("node_version") if current else None,
    }
    worker_rows = [
        {"pm_id": w.pm_id, "pid": w.pid, "status": w.status, "restarts": w.restarts,
         "memory_mb": round(w.memory / 1e6, 1), "release": w.release_in(ctx.paths.releases_dir)}
        for w in workers
    ]
    data: dict[str, Any] = {
        "app": config.app.name,
        "root": str(ctx.paths.root),
        "current": current,
        "url": f"http://{host}:{config.server.port}",
        "healthy": problem is None,
        "health_problem": problem,
        "pm2_daemon_running": daemon_running,
        "startup_on_boot": startup_configured(),
        "node": node,
        "deploy_running": _deploy_running(ctx.paths.build_lock_file),
        "workers": worker_rows,
        "lost_workers": lost,
        "draining_workers": [w.pid for w in draining],
    }
    if json_mode:
        ctx.reporter.result(data)
        return
    info = ctx.reporter.info
    info(f"app {config.app.name} at {data['url']}  root {ctx.paths.root}")
    info(f"current release: {current or 'none'}")
    if data["deploy_running"]:
        running = data["deploy_running"]
        info(f"a deploy is running: pid {running['pid']} since {running['started_at']} (a rollback does not "
             "wait for it)")
    info(f"health {health.path}: {'ok' if problem is None else problem}")
    mismatch = built_node_problem(node["pm2"], node["built_with"])
    if mismatch:
        ctx.reporter.warn(mismatch)
    elif node["pm2"]:
        info(f"node {node['pm2']} (PM2's daemon runs every worker on it)")
    from rich.table import Table

    table = Table("pm id", "pid", "status", "restarts", "memory", "release")
    for w in workers:
        table.add_row(str(w.pm_id), str(w.pid), w.status, str(w.restarts), f"{w.memory / 1e6:.1f} MB",
                      w.release_in(ctx.paths.releases_dir) or "?")
    if workers:
        ctx.reporter.console.print(table)
    elif daemon_running:
        info("no PM2 workers for this app")
    else:
        info(f"PM2's daemon is not running (PM2_HOME={pm2.home_dir})")
    if draining:
        info(f"{len(draining)} old worker(s) draining: PM2 is stopping them (pid "
             f"{', '.join(str(w.pid) for w in draining)}); they take no new connections")
    if lost:
        ctx.reporter.warn(f"{len(lost)} worker(s) of a release here run outside PM2's list (pid "
                          f"{', '.join(map(str, lost))}) and may still take connections: `nextdeploy stop`, "
                          "`start` or the next deploy stops them")
    if current and not workers and not lost:
        info(f"nothing serves {current}: `nextdeploy start` starts it again (no build)")
    if data["startup_on_boot"]:
        info("PM2 starts on boot: yes (pm2 startup is configured)")
    else:
        info("PM2 starts on boot: not configured; run `pm2 startup` once and follow its instructions")


def _deploy_running(build_lock_file: Path) -> dict[str, Any] | None:
    """The deploy holding the build lock now, if any."""
    owner = DeployLock(build_lock_file, "nextdeploy status").running_holder()
    return owner.__dict__ if owner is not None else None


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
        with ctx.reporter.step(f"remove {ctx.config.app.name} from PM2"):
            if workers:
                pm2.check(pm2_plan.delete_argv(pm2.binary, ctx.config.app.name), "delete the app")
            pm2.save()
        # A crash-looping worker that PM2 was restarting during the delete can outlive it.
        stop_lost_workers(ctx, pm2, after_delete=any(worker.status != "online" for worker in workers))


@click.command("logs")
@config_option
@debug_option
@click.option("-n", "--lines", default=50, show_default=True, help="How many past lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
def logs_command(config_path: Path, lines: int, follow: bool) -> None:
    """The PM2 logs of the app (time-stamped, kept in <root>/logs outside the releases)."""
    ctx = make_context(config_path)
    pm2 = open_pm2(ctx)
    subprocess.run(pm2_plan.logs_argv(pm2.binary, ctx.config.app.name, lines, follow), env=pm2.env, check=False)
