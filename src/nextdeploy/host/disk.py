"""A full disk: told apart from other failures, with where the deploy root's space went.

Releases, the build dir and the caches live on one disk: when it fills up, pnpm, ``next build`` or our own
assembly fail with ENOSPC. Reported as a build error or an unexpected OSError, the user looked for a bug
in the app; this says what is wrong and what can be freed.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from nextdeploy.core.errors import DiskFullError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What the tools print when they hit it: Node's and pnpm's error codes, libc's messages.
DISK_FULL_WORDS = ("ENOSPC", "EDQUOT", "No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that found no space (or no quota) left."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def says_disk_full(lines: Iterable[str]) -> bool:
    """Whether a tool's output (a build log's tail) says it ran out of disk space. Tools wrap long
    messages (pnpm: "...: No⏎      space left on device"): the words are looked for across lines."""
    text = " ".join(" ".join(lines).split())
    return any(word in text for word in DISK_FULL_WORDS)


def disk_full_error(root: Path, doing: str, details: list[str] | None = None) -> DiskFullError:
    """The error for a full disk under ``root`` while ``doing`` something, with what takes the space there.
    Called once the failed step's own files are removed, so the free space is what the next try has."""
    usage = {name: _disk_bytes(root / name) for name in ("releases", "cache", "logs")}
    return DiskFullError(
        f"the disk of {root} is full ({_megabytes(_free_bytes(root))} free) while {doing}",
        hint=(f"free space on it; in {root}: releases {_megabytes(usage['releases'])} (a lower [releases] keep "
              f"removes old ones on the next deploy), cache {_megabytes(usage['cache'])} (safe to delete: the next "
              f"build installs again), logs {_megabytes(usage['logs'])}; nothing live was changed"),
        details=details,
    )


def _free_bytes(path: Path) -> int:
    """Free space for this user on the disk of ``path`` (or of its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def _disk_bytes(directory: Path) -> int:
    """Allocated bytes under ``directory``, as ``du`` counts them (a hard-linked file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in (*dirnames, *filenames):
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
