"""`nextdeploy stop`: remove the app from PM2, keeping its releases."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, context_for, debug_option, lock_timeout_option
from nextdeploy.core.config import load_config
from nextdeploy.procedures.lifecycle import stop


@click.command("stop")
@config_option
@lock_timeout_option
@debug_option
def stop_command(config_path: Path, lock_timeout: float) -> None:
    """Remove the app from PM2. Releases and `current` are kept; `nextdeploy start` serves it again."""
    config = load_config(config_path)
    if config.hosts:
        from nextdeploy.fleet.commands import fleet_stop

        fleet_stop(config, config_path.read_bytes(), json_mode=False, lock_timeout=lock_timeout)
        return
    stop(context_for(config), lock_timeout)
