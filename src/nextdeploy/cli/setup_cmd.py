"""``nextdeploy setup``: install this very nextdeploy, and pm2, on every host of the fleet."""

from __future__ import annotations

from pathlib import Path

import click

from nextdeploy.cli.options import config_option, debug_option
from nextdeploy.core.config import load_config
from nextdeploy.fleet.setup import setup_fleet, ssh_settings
from nextdeploy.remote.ssh import SshTransport


@click.command("setup")
@config_option
@debug_option
def setup_command(config_path: Path) -> None:
    """Set up every [[hosts]] entry: this nextdeploy's version and pm2 under the host's root.

    Needs SSH, Python >= 3.11 with venv, Node and rsync on each host. A host already on this version
    is left as it is; another version is replaced."""
    config = load_config(config_path)
    with SshTransport(ssh_settings(config)) as transport:
        setup_fleet(config, transport, click.echo)
