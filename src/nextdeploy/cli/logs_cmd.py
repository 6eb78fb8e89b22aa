"""`nextdeploy logs`: the app's logs across their rotations, and following them."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, context_for, debug_option
from nextdeploy.core.config import load_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ConfigError
from nextdeploy.host import applogs
from nextdeploy.procedures.status import pm2_as_it_is


@click.command("logs")
@config_option
@debug_option
@click.option("-n", "--lines", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many past lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("--host", metavar="NAME", help="With [[hosts]]: this host's logs only (its ssh value).")
def logs_command(config_path: Path, lines: int, follow: bool, host: str | None) -> None:
    """The app's logs (time-stamped, kept in <root>/logs outside the releases), across their rotations."""
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.commands import fleet_logs

        fleet_logs(config, config_path.read_bytes(), host, lines, follow)
        return
    if host is not None:
        raise ConfigError(f"--host {host}: {config_path} lists no [[hosts]]",
                          hint="leave --host out: the logs are this machine's")
    ctx = context_for(config)
    streams = log_streams(ctx)
    for path, last in tails(ctx, lines):
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
        labels = stream_labels(ctx)
        applogs.follow(streams, lambda path, line: click.echo(f"{labels[path]} | {line}"))


def log_streams(ctx: Context) -> list[Path]:
    name = ctx.config.app.name
    return [ctx.paths.pm2_out_log(name), ctx.paths.pm2_error_log(name), ctx.paths.pm2_raw_log(name)]


def stream_labels(ctx: Context) -> dict[Path, str]:
    """How a followed line names its stream: ``out``, ``error``, ``raw``."""
    name = ctx.config.app.name
    return {path: path.name.removeprefix(f"pm2-{name}.").removesuffix(".log") for path in log_streams(ctx)}


def tails(ctx: Context, lines: int) -> list[tuple[Path, list[str]]]:
    """The last ``lines`` of each stream worth showing (the raw one only when it holds something)."""
    raw = ctx.paths.pm2_raw_log(ctx.config.app.name)
    shown = []
    for path in log_streams(ctx):
        last = applogs.tail(path, lines)
        if last or (path != raw and path.exists()):
            shown.append((path, last))
    return shown
