"""Version skew: the live release also serves the ``/_next/static`` files of recent releases.

After a deploy, open tabs still ask for the chunks of the release that rendered them; when those are
gone the tab breaks (``ChunkLoadError``, next.js#15890). So each release records its own static files
(``.nextdeploy/static-files.json``, written at assembly), and before a release goes live - by a deploy
or a rollback - the static files of the other releases in its window are hard-linked into its
``.next/static``:

- the window is the release itself plus the ``K - 1`` other usable releases that were live most
  recently (``K`` = ``[skew] keep_assets_of``, default ``[releases] keep``); after a rollback from C to
  B the window of B holds C, so C's open tabs keep working;
- only a release's *own* files are bridged, never what was bridged into it, so assets leave the window
  (and then answer 404) instead of piling up; links of releases that left the window are removed;
- a release's own files always win; among bridged files of the same name (non-hashed names) the
  most recently live release wins.

Why links into an older release are acceptable (a rollback adds links into its target): the release's
own files are never touched; what is added are extra names of immutable, content-hashed files, and
Next never writes under ``.next/static`` at runtime, so a hard link cannot carry a runtime write from one
release into another (the hazard of sharing inodes, e.g. ISR output, does not apply here). Next reads the
list of static files when it starts, so links must be in place before the release's server starts:
before the preflight, and before a rollback's reload.

During the rolling reload itself, a page rendered by a new worker can request its chunks from an old
worker, whose Next does not know them (it cannot learn new files without a restart): the launcher
answers such a request from a newer release's own files (launcher.cjs, "Static files of newer releases").
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nextdeploy.core.context import Context
from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.manifest import layout_of
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.core.releaselog import ReleaseRecord
from nextdeploy.core.steps import StepName
from nextdeploy.nextjs.traces import walk_files

STATIC_LIST = "static-files.json"


def asset_window(records: Sequence[ReleaseRecord], live: str, keep: int) -> list[str]:
    """``live`` and the ``keep - 1`` other usable releases that were live most recently, newest first.

    "Most recently live" is the position of a release's latest activation or rollback-to in the log."""
    others = [record for record in records if record.usable and record.id != live and record.live_seq >= 0]
    others.sort(key=lambda record: record.live_seq, reverse=True)
    return [live, *[record.id for record in others[: max(0, keep - 1)]]]


@dataclass
class BridgePlan:
    """What to change in the target's ``.next/static``: names to link from a release, names to remove."""

    link: dict[str, str] = field(default_factory=dict)  # static-relative path -> release id
    remove: list[str] = field(default_factory=list)


def plan_bridge(own: Collection[str], sources: Sequence[tuple[str, Collection[str]]],
                present: Collection[str]) -> BridgePlan:
    """Decide the bridged files of a release.

    ``own``: its own static files; ``sources``: (release id, its own files) for the rest of the window,
    most recently live first; ``present``: what its static folder holds now. Bridged files that left
    the window are removed; the release's own files are never touched."""
    plan = BridgePlan()
    own_set = set(own)
    for release_id, files in sources:
        for name in files:
            if name not in own_set and name not in plan.link:
                plan.link[name] = release_id
    plan.remove = sorted(name for name in present if name not in own_set and name not in plan.link)
    return plan


# --- doing ----------------------------------------------------------------------------------------------


def static_list_path(layout: ReleaseLayout) -> Path:
    return layout.meta_dir / STATIC_LIST


def list_static(layout: ReleaseLayout) -> list[str]:
    """The files under the release's ``.next/static`` now, relative to it. Reads the disk."""
    if not layout.static_dir.is_dir():
        return []
    return sorted(walk_files(layout.static_dir))


def static_list_json(files: Sequence[str]) -> str:
    return json.dumps({"files": list(files)}, indent=0) + "\n"


def read_static_list(layout: ReleaseLayout) -> list[str] | None:
    """A release's own static files as recorded at assembly; None when it has no record."""
    try:
        data = json.loads(static_list_path(layout).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return [str(name) for name in files] if isinstance(files, list) else None


@dataclass
class BridgeReport:
    window: list[str]
    linked: int = 0
    copied: int = 0  # when a hard link was refused (another filesystem, protected_hardlinks)
    removed: int = 0


def bridge_assets(releases_dir: Path, records: Sequence[ReleaseRecord], live: str, keep: int) -> BridgeReport:
    """Make ``releases/<live>`` serve the static files of its window; returns what changed. Writes only
    inside that release's ``.next/static``."""
    layout = layout_of(releases_dir / live)
    window = [release_id for release_id in asset_window(records, live, keep)
              if release_id == live or layout_of(releases_dir / release_id) is not None]
    report = BridgeReport(window)
    if layout is None:
        return report
    present = list_static(layout)
    recorded = read_static_list(layout)
    own = recorded if recorded is not None else present  # no record: treat everything as its own
    sources: list[tuple[str, list[str]]] = []
    source_dirs: dict[str, Path] = {}
    for release_id in window[1:]:
        source_layout = layout_of(releases_dir / release_id)
        files = read_static_list(source_layout) if source_layout else None
        if source_layout is not None and files is not None:
            sources.append((release_id, files))
            source_dirs[release_id] = source_layout.static_dir
    plan = plan_bridge(own, sources, present)
    for name in plan.remove:
        (layout.static_dir / name).unlink(missing_ok=True)
        report.removed += 1
    for name, release_id in plan.link.items():
        source = source_dirs[release_id] / name
        target = layout.static_dir / name
        if not source.is_file() or (target.exists() and _same_file(source, target)):
            continue
        if _link_or_copy(source, target):
            report.linked += 1
        else:
            report.copied += 1
    return report


def _same_file(left: Path, right: Path) -> bool:
    try:
        return os.path.samefile(left, right)
    except OSError:
        return False


def _link_or_copy(source: Path, target: Path) -> bool:
    """Put ``source`` at ``target`` (replacing it) as a hard link; copies if linking is refused.
    Returns whether it linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.nextdeploy-tmp")
    temporary.unlink(missing_ok=True)
    linked = True
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copy2(source, temporary)
        linked = False
    os.replace(temporary, target)
    return linked


def bridge_static_assets(ctx: Context, release_id: str) -> BridgeReport:
    """Before ``release_id`` starts serving (deploy or rollback): link in the static files of its window.

    Raises ReleaseError when the files cannot be placed."""
    keep = ctx.config.skew.keep_assets_of or ctx.config.releases.keep
    with ctx.reporter.step(f"keep serving the static assets of up to {keep - 1} earlier release(s)",
                           StepName.BRIDGE_ASSETS):
        try:
            report = bridge_assets(ctx.paths.releases_dir, ctx.log.records(), release_id, keep)
        except OSError as exc:
            raise ReleaseError(
                f"cannot link the static assets of earlier releases into {release_id}: {exc}",
                hint=f"check free space and permissions under {ctx.paths.releases_dir}",
            ) from None
    if report.linked or report.copied or report.removed:
        others = ", ".join(report.window[1:]) or "none"
        ctx.reporter.info(f"static assets: {report.linked} linked, {report.copied} copied, "
                          f"{report.removed} of releases out of the window removed (window: {others})")
    return report
