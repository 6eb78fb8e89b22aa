"""`nextdeploy stop`: remove the app from PM2, keeping its releases."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, debug_option, lock_timeout_option, make_context
from nextdeploy.procedures.lifecycle import stop


@click.command("stop")
@config_option
@lock_timeout_option
@debug_option
def stop_command(config_path: Path, lock_timeout: float) -> None:
    """Remove the app from PM2. Releases and `current` are kept; `nextdeploy start` serves it again."""
    stop(make_context(config_path), lock_timeout)
