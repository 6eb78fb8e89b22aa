"""Finding the external programs nextdeploy drives: node, git, the package managers and pm2.

Order: an explicit path from the config, then PATH, then the deploy root's tools prefix
(``<root>/tools/node_modules/.bin``), where pm2 can be installed with npm on demand. A package manager
must also be the version the app wants (``plans.packagemanager``): one that fits is taken from PATH,
else from its own prefix ``<root>/tools/<name>-<version>`` where nextdeploy installs it with npm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from nextdeploy.core.errors import ToolMissingError
from nextdeploy.plans.npm import GLOBALCONFIG_ARGV, globalconfig_from, npm_install_argv
from nextdeploy.plans.packagemanager import YARN_BERRY_PACKAGE, ManagerChoice

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
    """``npm install --prefix <tools_dir> <pkg>`` (``plans.npm``: with the machine's global npmrc) and return
    the installed binary."""
    npm = require_tool("npm")
    tools_dir.mkdir(parents=True, exist_ok=True)
    argv = npm_install_argv(npm, str(tools_dir), PINNED_NPM_TOOLS[name], npm_globalconfig(npm))
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    binary = tools_bin(tools_dir) / name
    if completed.returncode != 0 or not binary.is_file():
        last = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolMissingError(
            f"could not install {name} into {tools_dir}: {last[0]}",
            hint=f"install it yourself: npm install -g {PINNED_NPM_TOOLS[name]}",
        )
    return str(binary)


def npm_globalconfig(npm: str) -> str | None:
    """The global npmrc ``npm`` reads when not given ``--prefix`` (None when npm cannot say)."""
    try:
        completed = subprocess.run([npm, *GLOBALCONFIG_ARGV], capture_output=True, text=True, check=False,
                                   timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return globalconfig_from(completed.stdout) if completed.returncode == 0 else None


def node_version(node: str) -> str:
    """``v20.20.2`` -> ``20.20.2``."""
    completed = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return completed.stdout.strip().lstrip("v")


# npm packages whose binaries are package managers, and the manager each one is.
MANAGER_PACKAGES = {"pnpm": "pnpm", "@pnpm/exe": "pnpm", "yarn": "yarn", YARN_BERRY_PACKAGE: "yarn", "npm": "npm"}


def package_version(binary: str, manager: str) -> str | None:
    """The version of ``manager`` that ``binary`` runs, from the package.json of the npm package it belongs
    to (no process: ``pnpm --version`` would itself switch to the version the project pins, and costs
    0.3 s); None when it is not an npm install of that manager (a corepack shim, a standalone binary)."""
    real = Path(os.path.realpath(binary))
    for directory in list(real.parents)[:4]:
        package_json = directory / "package.json"
        if not package_json.is_file():
            continue
        try:
            data = json.loads(package_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or MANAGER_PACKAGES.get(str(data.get("name"))) != manager:
            return None
        version = data.get("version")
        return version if isinstance(version, str) else None
    return None


def manager_prefix(tools_dir: Path, choice: ManagerChoice) -> Path:
    """Where nextdeploy installs ``choice`` with npm: ``<root>/tools/pnpm-8.15.6``, ``<root>/tools/yarn-3``."""
    return tools_dir / f"{choice.name}-{choice.install_version or 'any'}"


def manager_binary(tools_dir: Path, choice: ManagerChoice) -> Path:
    return tools_bin(manager_prefix(tools_dir, choice)) / choice.name


def find_package_manager(choice: ManagerChoice, tools_dir: Path) -> tuple[str, str | None] | None:
    """A binary of the package manager the app wants, and its version: on PATH, else where nextdeploy
    installed it (its own prefix, or the shared one of earlier versions); None when none fits."""
    candidates = [shutil.which(choice.name), str(manager_binary(tools_dir, choice)),
                  str(tools_bin(tools_dir) / choice.name)]
    for candidate in dict.fromkeys(c for c in candidates if c):
        if not os.path.isfile(candidate):
            continue
        version = package_version(candidate, choice.name)
        if choice.accepts(version):
            return candidate, version
    return None
