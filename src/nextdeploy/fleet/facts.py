"""What a host is: the facts the controller needs to set it up and to check a build fits it, as JSON.

Standard library only, and old-Python syntax: before nextdeploy is installed on a host, the controller
sends this very file to the host's ``python3`` on stdin (``python3 - ROOT``) to learn what is there (which
Python, whether it has venv, node, rsync, npm, what the root holds). Once installed, ``nextdeploy host
facts --root ROOT`` answers the same facts, with the installed version. Nothing here changes the host.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

INSTALLED_MARK = ".installed"  # written last into <root>/tools/nextdeploy-<version>/: the install is complete
PREFIX = "nextdeploy-"
# What nextdeploy keeps in a root whose files it deletes (host.rootmark.DELETED_IN).
DELETED_IN = ("builds", "trash", "releases")
ROOT_MARK = ".nextdeploy-root"  # host.rootmark.ROOT_MARKER
ENTRIES_SHOWN = 50


def nextdeploy_version() -> str | None:
    """The version of the nextdeploy this Python runs, or None when there is none."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python < 3.8: too old anyway
        return None
    try:
        return version("nextdeploy")
    except PackageNotFoundError:
        return None


def libc() -> dict[str, str | None]:
    """The C library: ``{"family": "glibc"|"musl"|None, "version": "2.36"}``."""
    family, version = platform.libc_ver()
    if family == "glibc":
        return {"family": "glibc", "version": version or None}
    loaders = sorted(glob.glob("/lib/ld-musl-*.so.1"))
    if loaders:
        # The musl loader run bare prints "musl libc (x86_64)" and "Version 1.2.4" to stderr.
        said = _output([loaders[0]], stderr=True) or ""
        found = [line.split()[1] for line in said.splitlines() if line.startswith("Version ")]
        return {"family": "musl", "version": found[0] if found else None}
    return {"family": None, "version": None}


def _output(argv: list[str], stderr: bool = False) -> str | None:
    """What a program prints (stdout, or stderr), or None when it cannot run."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stderr if stderr else done.stdout).decode(errors="replace").strip()


def node() -> dict[str, str | None] | None:
    path = shutil.which("node")
    if path is None:
        return None
    return {"path": path, "version": (_output([path, "--version"]) or "").lstrip("v") or None}


def has_venv() -> bool:
    """Whether ``python3 -m venv`` makes a venv with pip (Debian ships ensurepip apart: python3-venv)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("venv", "ensurepip"))


def root_facts(root: Path) -> dict[str, Any]:
    """The root as ``host.rootmark.claim`` needs it, read only."""
    try:
        entries = sorted(entry.name for entry in root.iterdir() if entry.name != "lost+found")
    except FileNotFoundError:
        return {"path": str(root), "exists": False, "entries": [], "marked": False, "release_log": False,
                "deletable": 0, "installed": []}
    except OSError as exc:
        return {"path": str(root), "exists": True, "error": exc.strerror or str(exc), "entries": [],
                "marked": False, "release_log": False, "deletable": 0, "installed": []}
    deletable = 0
    for name in DELETED_IN:
        try:
            deletable += len(os.listdir(str(root / name)))
        except OSError:
            pass
    installed = sorted(path.name[len(PREFIX):] for path in (root / "tools").glob(PREFIX + "*")
                       if (path / INSTALLED_MARK).is_file())
    return {"path": str(root), "exists": True, "entries": entries[:ENTRIES_SHOWN], "entry_count": len(entries),
            "marked": ROOT_MARK in entries, "release_log": _has_release_log(root / "releases.jsonl"),
            "deletable": deletable, "installed": installed}


def _has_release_log(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            entry = json.loads(log.readline())
    except (OSError, ValueError):
        return False
    return isinstance(entry, dict) and "event" in entry and "release" in entry


def free_disk(path: Path) -> int | None:
    """Bytes free for this user on the file system of ``path`` (or of its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(str(candidate))
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def pm2(root: Path) -> str | None:
    """pm2 as the local deploy finds it: on PATH, else under the root's tools."""
    local = root / "tools" / "node_modules" / ".bin" / "pm2"
    return shutil.which("pm2") or (str(local) if local.is_file() else None)


def collect(root: Path) -> dict[str, Any]:
    """Every fact about this machine and ``root`` on it, as plain JSON values."""
    return {
        "nextdeploy": nextdeploy_version(),
        "python": {"path": sys.executable, "version": platform.python_version(), "venv": has_venv()},
        "os": platform.system(),
        "arch": platform.machine(),
        "libc": libc(),
        "node": node(),
        "npm": shutil.which("npm"),
        "rsync": shutil.which("rsync"),
        "pm2": pm2(root),
        "root": root_facts(root),
        "disk_free": free_disk(root),
    }


if __name__ == "__main__":  # python3 - ROOT < facts.py
    print(json.dumps(collect(Path(sys.argv[1]))))
