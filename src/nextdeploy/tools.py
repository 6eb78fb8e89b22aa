"""Finding the external programs nextdeploy drives: node, git, the package managers and pm2.

Order: an explicit path from the config, then PATH, then the deploy root's tools prefix
(``<root>/tools/node_modules/.bin``), where pnpm and pm2 can be installed with npm on demand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from nextdeploy.errors import ToolMissingError

PINNED_NPM_TOOLS = {"pm2": "pm2@7", "pnpm": "pnpm@10", "yarn": "yarn@1"}

INSTALL_HINTS = {
    "node": "install Node.js >= 20.9 (https://nodejs.org) and put `node` on PATH",
    "npm": "install Node.js with npm, or put `npm` on PATH",
    "git": "install git (apt-get install git)",
}


def tools_bin(tools_dir: Path) -> Path:
    return tools_dir / "node_modules" / ".bin"


def find_tool(name: str, tools_dir: Path | None = None, explicit: str | None = None) -> str | None:
    """The path of ``name``, or None."""
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    if tools_dir is not None:
        candidate = tools_bin(tools_dir) / name
        if candidate.is_file():
            return str(candidate)
    return None


def require_tool(name: str, tools_dir: Path | None = None, explicit: str | None = None,
                 install: bool = False) -> str:
    """The path of ``name``; installs npm-distributed tools into ``tools_dir`` when ``install``."""
    found = find_tool(name, tools_dir, explicit)
    if found:
        return found
    if explicit:
        raise ToolMissingError(f"{name} not found at {explicit}", hint=f"fix the configured path of {name}")
    if install and tools_dir is not None and name in PINNED_NPM_TOOLS:
        return install_npm_tool(name, tools_dir)
    hint = INSTALL_HINTS.get(name, f"install it with `npm install -g {PINNED_NPM_TOOLS.get(name, name)}`")
    raise ToolMissingError(f"`{name}` was not found on PATH", hint=hint)


def install_npm_tool(name: str, tools_dir: Path) -> str:
    """``npm install --prefix <tools_dir> <pkg>`` and return the installed binary."""
    npm = require_tool("npm")
    tools_dir.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        [npm, "install", "--prefix", str(tools_dir), "--no-audit", "--no-fund", PINNED_NPM_TOOLS[name]],
        capture_output=True, text=True, check=False,
    )
    binary = tools_bin(tools_dir) / name
    if completed.returncode != 0 or not binary.is_file():
        last = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolMissingError(
            f"could not install {name} into {tools_dir}: {last[0]}",
            hint=f"install it yourself: npm install -g {PINNED_NPM_TOOLS[name]}",
        )
    return str(binary)


def node_version(node: str) -> str:
    """``v20.20.2`` -> ``20.20.2``."""
    completed = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return completed.stdout.strip().lstrip("v")
