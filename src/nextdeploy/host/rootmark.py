"""Whose is the deploy root? nextdeploy deletes in it (build dirs, trash, unfinished releases, processes
working there), so it must be a directory nextdeploy made, never one that held something else.

A root nextdeploy creates (or finds empty) gets the mark ``.nextdeploy-root``. A root without it that
holds anything is refused, unless it clearly is an earlier nextdeploy's root (its release log is there,
or it holds only nextdeploy's own, empty, folders): that one is adopted, the mark written.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from enum import Enum
from pathlib import Path

from nextdeploy import __version__
from nextdeploy.core.errors import HostPathError
from nextdeploy.core.paths import DeployPaths
from nextdeploy.host.disk import is_disk_full

ROOT_MARKER = ".nextdeploy-root"
MARKER_TEXT = "This directory is a nextdeploy deploy root: nextdeploy creates and deletes files in it.\n"
# Everything nextdeploy (any version) keeps directly in a root, and PM2_HOME as docs/config.md suggests it.
OWN_ENTRIES = frozenset({
    "releases", "shared", "builds", "cache", "logs", "tools", "trash", "current", "releases.jsonl",
    "ecosystem.config.cjs", "ecosystem.applied", ".lock", ".build.lock", "held.json", ".pm2",
})
# The folders whose content nextdeploy deletes on its own (what a foreign root must not lose).
DELETED_IN = ("builds", "trash", "releases")


class Claim(Enum):
    OURS = "ours"  # marked, or new, or empty: mark it (again) and go on
    ADOPT = "adopt"  # an earlier nextdeploy's root, unmarked: mark it
    FOREIGN = "foreign"  # something else: refuse


def claim(entries: Collection[str], marked: bool, has_release_log: bool, deletable: int) -> Claim:
    """Decide whose a root is, from its entries (names directly in it), whether it has the mark, whether a
    release log with nextdeploy's events is there, and how many entries ``DELETED_IN`` folders hold."""
    if marked or not entries:
        return Claim.OURS
    if has_release_log:
        return Claim.ADOPT
    own = all(name in OWN_ENTRIES or name.startswith((".write-test-", ".current.tmp-")) for name in entries)
    return Claim.ADOPT if own and deletable == 0 else Claim.FOREIGN


def check_root(root: Path) -> Claim:
    """Claim the root for nextdeploy before anything is created or deleted in it; raises HostPathError
    for a non-empty directory nextdeploy did not create. Returns the claim (the caller writes the mark)."""
    try:
        # lost+found: the root is a file system of its own (mkfs made it), not someone's files.
        entries = sorted(entry.name for entry in root.iterdir() if entry.name != "lost+found")
    except FileNotFoundError:
        return Claim.OURS
    except NotADirectoryError:
        file = next((path for path in (root, *root.parents) if path.exists() and not path.is_dir()), root)
        where = (f"[server] root {root} is a file" if file == root
                 else f"cannot create [server] root {root}: {file} is a file")
        raise HostPathError(f"{where}, not a directory",
                            hint="point [server] root at a new or empty directory") from None
    except OSError as exc:
        raise HostPathError(f"cannot read the deploy root {root}: {exc.strerror}",
                            hint=f"make {root} readable and writable for this user, or choose another root") from None
    deletable = sum(_count_entries(root / name) for name in DELETED_IN)
    decision = claim(entries, ROOT_MARKER in entries, _has_release_log(root / "releases.jsonl"), deletable)
    if decision is Claim.FOREIGN:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise HostPathError(
            f"[server] root {root} is a non-empty directory nextdeploy did not create (it holds {shown}); "
            "nextdeploy deletes files in its root, so it does not use it",
            hint="point [server] root at a new or empty directory (nextdeploy creates it), e.g. "
                 f"{root / 'nextdeploy'}",
        )
    return decision


def prepare_root(paths: DeployPaths) -> Claim:
    """Create the deploy root's folders, with a clear error when the root is not writable or is not ours
    (a non-empty directory nextdeploy did not create: ``check_root``); the root marked. Returns the claim."""
    decision = check_root(paths.root)
    for directory in (paths.root, paths.releases_dir, paths.shared_dir, paths.builds_dir,
                      paths.cache_dir, paths.logs_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if directory == paths.logs_dir:
                directory.chmod(0o700)  # build, preflight and app logs may hold secrets
        except OSError as exc:
            raise HostPathError(
                f"cannot create {directory}: {exc.strerror}",
                hint=f"make [server] root ({paths.root}) writable for this user, or choose another root",
            ) from None
    probe = paths.root / f".write-test-{__version__}"
    try:
        probe.write_text("")
        probe.unlink()
        mark(paths.root)
    except OSError as exc:
        raise HostPathError(
            f"deploy root {paths.root} is not writable: {exc.strerror}",
            hint="fix its owner/permissions or choose another [server] root",
        ) from None
    return decision


def mark(root: Path) -> None:
    """Write the mark (idempotent)."""
    marker = root / ROOT_MARKER
    if marker.exists():
        return
    try:
        marker.write_text(MARKER_TEXT, encoding="utf-8")
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        marker.touch()  # an empty mark needs no data block: the deploy goes on to say the disk is full


def _count_entries(directory: Path) -> int:
    try:
        return sum(1 for _ in directory.iterdir())
    except OSError:
        return 0


def _has_release_log(path: Path) -> bool:
    """Whether ``path`` is a nextdeploy release log: its first line an event of one."""
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            first = log.readline()
        entry = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(entry, dict) and "event" in entry and "release" in entry
