"""Planning the reuse of the last build's ``node_modules`` when nothing that decides them changed.

A code-only change installs exactly what the previous build installed: a frozen-lockfile install then
costs 0.4 s on an idle machine and 1.3 s beside a loaded app (measured with bench/run.py), for nothing.
So a successful build hands its ``node_modules`` directories to ``<root>/cache/deps`` (renames, no copy),
and the next build takes them back instead of installing when the key matches. The key covers every
input of the install: the lockfile, every ``package.json`` and package-manager config file of the
source, the package manager and node binaries, the platform, and ``[app] build_env``.

Only a build that succeeded hands its dependencies on, so a broken install is never reused. The cache
is valid only while its ``key`` file exists: taking it removes the key first, handing it on writes the
key last, so a run killed halfway leaves either a complete cache or none (the next build installs).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.plans.build import IGNORED_IN_SOURCE
from nextdeploy.plans.ops import MakeDirs, Op, Remove, Rename, WriteFile
from nextdeploy.plans.packagemanager import ManagerChoice

# Files whose bytes decide what an install puts into node_modules.
INSTALL_INPUTS = frozenset({
    "package.json", "pnpm-lock.yaml", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock",
    "pnpm-workspace.yaml", ".pnpmfile.cjs", ".npmrc", ".yarnrc", ".yarnrc.yml",
})
# Never walked: dependencies, build output, VCS data (what a source export leaves out anyway).
SKIPPED_DIRS = frozenset(IGNORED_IN_SOURCE)
KEY_FILE = "key"
DIRS_FILE = "dirs"
TREE_DIR = "tree"


def reuse_blocker(choice: ManagerChoice, yarnrc: Mapping[str, str], build_env: Mapping[str, str]) -> str | None:
    """Why the last build's node_modules cannot stand in for an install (a one-line note), or None.

    Yarn 2+ installs into node_modules only with ``nodeLinker: node-modules``; by default (Plug'n'Play)
    its install is ``.pnp.cjs`` and ``.yarn/``, which this reuse does not carry over."""
    if not choice.berry:
        return None
    linker = build_env.get("YARN_NODE_LINKER") or yarnrc.get("nodeLinker") or "pnp"
    if linker == "node-modules":
        return None
    return (f"yarn's nodeLinker is {linker!r}: its install is not (only) node_modules, so every deploy installs "
            "again (`nodeLinker: node-modules` in .yarnrc.yml lets a deploy reuse the last build's)")


@dataclass(frozen=True)
class SourceScan:
    """What the reuse needs to know about a source tree (node_modules contents never walked)."""

    inputs: dict[str, bytes]  # relative path -> bytes, of every install input
    node_modules: list[str]  # relative paths of the node_modules directories


def scan_source(source_dir: Path) -> SourceScan:
    inputs: dict[str, bytes] = {}
    node_modules: list[str] = []
    for directory, subdirs, files in os.walk(source_dir):
        relative = Path(directory).relative_to(source_dir)
        if "node_modules" in subdirs:
            node_modules.append(str(relative / "node_modules"))
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name in INSTALL_INPUTS:
                inputs[str(relative / name)] = (Path(directory) / name).read_bytes()
    return SourceScan(inputs, sorted(node_modules))


def binary_identity(path: str) -> str:
    """Real path, size and mtime: changes when the tool is upgraded, costs no process spawn."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return real
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}"


def deps_key(inputs: Mapping[str, bytes], manager: str, tool: str, node: str,
             build_env: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    header = {
        "manager": manager,
        "tool": binary_identity(tool),
        "node": binary_identity(node),
        "platform": [platform.system(), platform.machine()],
        "build_env": sorted(build_env.items()),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in sorted(inputs):
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(inputs[name]).digest())
    return digest.hexdigest()


def cached_dirs(cache_dir: Path, key: str) -> list[str] | None:
    """The node_modules paths the cache holds for ``key``, or None (no cache, another key, damaged)."""
    try:
        if (cache_dir / KEY_FILE).read_text(encoding="utf-8").strip() != key:
            return None
        dirs = (cache_dir / DIRS_FILE).read_text(encoding="utf-8").split()
    except OSError:
        return None
    if not dirs or not all((cache_dir / TREE_DIR / rel).is_dir() for rel in dirs):
        return None
    return dirs


def take_ops(cache_dir: Path, dirs: Iterable[str], source_dir: Path) -> list[Op]:
    """Move the cached node_modules into a fresh source tree (the key goes first: a half-taken cache is none)."""
    ops: list[Op] = [Remove(cache_dir / KEY_FILE)]
    for rel in dirs:
        ops.append(MakeDirs((source_dir / rel).parent))
        ops.append(Rename(cache_dir / TREE_DIR / rel, source_dir / rel))
    return ops


def hand_on_ops(source_dir: Path, dirs: Iterable[str], key: str, cache_dir: Path, trash: Path,
                cache_exists: bool) -> list[Op]:
    """Move a successful build's node_modules into the cache (the key goes last).

    The previous cache (another key, or what is left of the one just taken) moves to ``trash``, which
    the build dir's background removal deletes: removing ~300 MB of node_modules takes seconds.
    """
    dirs = list(dirs)
    staging = cache_dir.with_name(cache_dir.name + ".new")
    ops: list[Op] = [Remove(staging)]
    if cache_exists:
        ops += [MakeDirs(trash), Rename(cache_dir, trash / "previous-deps")]
    for rel in dirs:
        ops.append(MakeDirs((staging / TREE_DIR / rel).parent))
        ops.append(Rename(source_dir / rel, staging / TREE_DIR / rel))
    ops.append(WriteFile(staging / DIRS_FILE, "\n".join(dirs) + "\n"))
    ops.append(WriteFile(staging / KEY_FILE, key + "\n"))
    ops.append(Rename(staging, cache_dir))
    return ops
