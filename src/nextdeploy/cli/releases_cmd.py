"""`nextdeploy releases`: the release log, with each release's status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from nextdeploy.activation.activate import current_release
from nextdeploy.cli.options import config_option, context_for, debug_option, json_option
from nextdeploy.core.config import load_config
from nextdeploy.core.context import Context
from nextdeploy.core.manifest import read_manifest
from nextdeploy.core.releaselog import Status


@click.command("releases")
@config_option
@json_option
@debug_option
def releases_command(config_path: Path, json_mode: bool) -> None:
    """List releases in the order of the release log, with their status."""
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.commands import fleet_releases

        fleet_releases(config, config_path.read_bytes(), json_mode)
        return
    ctx = context_for(config, json_mode)
    rows = release_rows(ctx)
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


def release_rows(ctx: Context) -> list[dict[str, Any]]:
    """The release log's releases (not removed), oldest first, as ``releases --json`` prints them."""
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
    return rows


def shown_status(status: str, current: bool) -> str:
    """A release's status in the table: the log's ``active`` (went live, never failed) is ``live`` for the
    current release and ``good`` (a rollback target) for the others; ``--json`` keeps the log's word."""
    if status == Status.ACTIVE:
        return "live" if current else "good"
    return status
