"""Assembling a release: the build's server files, static assets and launcher copied into
``releases/<id>``, the shared files linked, the Next.js steps, and the manifest that marks it complete."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy import __version__
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.manifest import tree_stats
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.core.releaselog import now_iso
from nextdeploy.core.steps import StepName
from nextdeploy.host.tools import node_version, require_tool
from nextdeploy.nextjs import prepare as nextjs_prepare
from nextdeploy.plans import release as release_plan
from nextdeploy.release.project import ProjectInfo

LAUNCHER_SOURCE = Path(__file__).parent.parent / "launcher" / "launcher.cjs"


@dataclass
class BuiltRelease:
    id: str
    layout: ReleaseLayout
    manifest: dict[str, Any]
    cleanup: threading.Thread | None = None  # removal of the build dir, still running


def app_rel_of(source: SourceLayout) -> str:
    """The app's path below the tracing root, where server.js lands inside the standalone tree."""
    try:
        required = json.loads(source.required_server_files.read_text(encoding="utf-8"))
        app_rel = str(required.get("relativeAppDir", "") or "")
    except (OSError, json.JSONDecodeError):
        app_rel = ""
    if (source.standalone_dir / app_rel / "server.js").is_file():
        return app_rel.strip("/")
    # Older Next.js: find the one server.js outside node_modules.
    for candidate in sorted(source.standalone_dir.rglob("server.js")):
        relative = candidate.relative_to(source.standalone_dir)
        if "node_modules" not in relative.parts:
            return relative.parent.as_posix() if relative.parent.parts else ""
    raise ReleaseError(
        f"no server.js in {source.standalone_dir}",
        hint="check that next.config sets output: 'standalone' and that the build finished",
    )


def assemble(ctx: Context, release_id: str, source: SourceLayout, info: ProjectInfo,
              revision: str | None, package_manager_version: str | None) -> BuiltRelease:
    config, paths = ctx.config, ctx.paths
    app_rel = app_rel_of(source) if config.release.mode == "standalone" else nextjs_prepare.traced_app_rel(source)
    layout = ReleaseLayout(paths.release_dir(release_id), app_rel)
    with ctx.reporter.step("assemble the release", StepName.ASSEMBLE):
        ctx.executor.apply_all(release_plan.begin_release_ops(layout))
        file_ops = nextjs_prepare.server_files_ops(ctx, source, layout, LAUNCHER_SOURCE)
        ctx.executor.apply(file_ops[0])
        checkpoint("mid-copy")
        ctx.executor.apply_all(file_ops[1:])
        present = {name for name in config.release.shared_files if (paths.shared_dir / name).exists()}
        ctx.executor.apply_all(
            release_plan.shared_link_ops(paths.shared_dir, config.release.shared_files, present, layout)
        )
        nextjs_facts = nextjs_prepare.prepare_release(ctx, source, layout)
        stats = tree_stats(layout.release_dir)
        manifest = {
            "id": release_id,
            "revision": revision,
            "server": layout.server_rel,
            "app_rel": layout.app_rel,
            # Its workers wait off the public port for the approval (launcher.cjs; see held.py).
            "hold": True,
            "mode": config.release.mode,
            "next_version": info.next_version,
            "node_version": node_version(require_tool("node")),
            "nextdeploy_version": __version__,
            "package_manager": info.lockfile.package_manager if info.lockfile else None,
            "package_manager_version": package_manager_version,
            "created_at": now_iso(),
            "files": stats.files,
            "bytes": stats.bytes,
            "symlinks": stats.symlinks,
            **nextjs_facts,
        }
        ctx.executor.apply_all(release_plan.finish_release_ops(layout, manifest))
    return BuiltRelease(release_id, layout, manifest)
