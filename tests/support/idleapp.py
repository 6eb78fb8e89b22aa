"""A config for the unit tests of commands that must start nothing: an app dir with a lockfile, a deploy
root and a PM2_HOME that do not exist yet, and a ``pm2`` that leaves a mark if it ever runs."""

from __future__ import annotations

import socket
import stat
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_file(tmp_path: Path) -> tuple[Path, Path]:
    """A config for an app in ``tmp_path/app``, and a pm2 that must never run (it leaves a mark if it does)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "hello", "dependencies": {"next": "15.0.0"}}')
    (app / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    marker = tmp_path / "pm2-ran"
    pm2 = tmp_path / "pm2"
    pm2.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    pm2.chmod(pm2.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "nextdeploy.toml"
    config.write_text(
        f'[app]\nname = "hello"\nsource = "{app}"\n\n'
        f'[server]\nroot = "{tmp_path / "root"}"\nport = {free_port()}\n\n'
        f'[pm2]\nbin = "{pm2}"\nhome = "{tmp_path / "pm2home"}"\n'
    )
    return config, marker
