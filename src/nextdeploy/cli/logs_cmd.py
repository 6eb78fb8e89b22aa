"""`nextdeploy logs`: the app's logs across their rotations, and following them."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, debug_option, make_context
from nextdeploy.host import applogs
from nextdeploy.procedures.status import pm2_as_it_is


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
