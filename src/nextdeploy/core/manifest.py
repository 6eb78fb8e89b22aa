"""The release manifest (``<release>/.nextdeploy/manifest.json``) and checks of a release on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.paths import META_DIR, ReleaseLayout


@dataclass(frozen=True)
class TreeStats:
    files: int
    bytes: int
    symlinks: int


def tree_stats(directory: Path) -> TreeStats:
    """Count files, bytes and symlinks without following links (what the release really holds)."""
    files = size = links = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                links += 1
            elif name in filenames:
                files += 1
                size += os.lstat(path).st_size
    return TreeStats(files, size, links)


def links_leaving(directory: Path, allowed: Collection[Path] = ()) -> list[tuple[str, str]]:
    """The symlinks under ``directory`` that resolve outside it, as (relative path, link target), except
    the ``allowed`` link paths. Links between files inside it (pnpm's node_modules) are fine."""
    top = os.path.realpath(directory)
    skip = {os.path.join(top, os.path.relpath(path, directory)) for path in allowed}
    leaving = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path) or path in skip:
                continue
            resolved = os.path.realpath(path)
            if resolved != top and not resolved.startswith(top + os.sep):
                leaving.append((os.path.relpath(path, top), os.readlink(path)))
    return sorted(leaving)


def read_manifest(release_dir: Path) -> dict[str, Any] | None:
    """The manifest of a release, or None if it is missing or unreadable (an unfinished release)."""
    path = release_dir / META_DIR / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def layout_of(release_dir: Path) -> ReleaseLayout | None:
    """The layout of a complete release, from its manifest."""
    manifest = read_manifest(release_dir)
    if manifest is None:
        return None
    return ReleaseLayout(release_dir, str(manifest.get("app_rel", "")))


def holds_until_approved(release_dir: Path) -> bool:
    """Whether the release's workers stay off the public port until it is approved (releases made by
    nextdeploy 0.x before the held cut-over never wait)."""
    manifest = read_manifest(release_dir)
    return manifest is not None and manifest.get("hold") is True


def is_approved(release_dir: Path) -> bool:
    """Whether the release passed its preflight: its workers may take traffic (always, without a hold)."""
    return not holds_until_approved(release_dir) or ReleaseLayout(release_dir).approved_file.exists()


def is_complete(release_dir: Path) -> bool:
    """A release is complete when it has a manifest and no 'unfinished' marker."""
    layout = ReleaseLayout(release_dir)
    return (
        release_dir.is_dir()
        and not layout.unfinished_marker.exists()
        and read_manifest(release_dir) is not None
    )
