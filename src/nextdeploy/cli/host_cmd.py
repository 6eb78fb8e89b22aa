"""``nextdeploy host ...``: host-level commands a controller runs on a host over SSH, answering in JSON.
Hidden: people run the fleet commands; these are their far end."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("host", hidden=True)
def host_group() -> None:
    """Host-level commands for a controller (JSON answers)."""


@host_group.command("facts")
@click.option("--root", required=True, type=click.Path(path_type=Path),
              help="The deploy root on this host ([server] root, or the host's root).")
def facts_command(root: Path) -> None:
    """What this host is (versions, platform, tools, the root's state), as one JSON object."""
    from nextdeploy.fleet.facts import collect

    click.echo(json.dumps(collect(root)))
