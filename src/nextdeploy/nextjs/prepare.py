"""The Next.js steps of assembling a release, called by the builder (``nextdeploy.release.assemble.assemble``).

    server_files_ops the standalone tree moved in, or the traced assembly for ``[release] mode = "traced"``
    prepare_release  once the files are in place, before the release counts as complete:
                     include/exclude, trace check, Server Actions key scrub, own static list,
                     shared image cache, Node/sharp checks, the ISR warning

Any ReleaseError raised here fails the build: the half-made release is removed, nothing live changes.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

from nextdeploy.activation.activate import current_release
from nextdeploy.core.checks import base_path_of, planned_checks
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.manifest import is_complete, links_leaving
from nextdeploy.core.paths import META_DIR, ReleaseLayout, SourceLayout
from nextdeploy.host.tools import node_version, require_tool
from nextdeploy.nextjs import caches, envcheck, skew, traced
from nextdeploy.nextjs.build import BuildOutput, inspect_build
from nextdeploy.nextjs.traces import (
    TraceSet,
    check_release_paths,
    excluded_files,
    included_files,
    listing,
    read_traces,
    reject_escaping,
    walk_files,
)
from nextdeploy.plans import release as release_plan
from nextdeploy.plans.ops import CopyFile, MakeDirs, Op, Remove, Symlink, WriteFile
from nextdeploy.release.project import find_lockfile
from nextdeploy.release.secrets import files_containing, scrub_ops, stored_server_actions_key


def traced_app_rel(source: SourceLayout) -> str:
    """The app's path in a traced release: the app below the tracing root (standalone's layout)."""
    return inspect_build(source).app_rel


def server_files_ops(ctx: Context, source: SourceLayout, layout: ReleaseLayout, launcher: Path) -> list[Op]:
    """The ops that put the server's files into the release. Traced mode may first trace, into the build,
    what a build without standalone output did not (see ``nextjs.traced``)."""
    if ctx.config.release.mode == "traced":
        build = inspect_build(source)
        traces = read_traces(build.next_dir, build.tracing_root)
        if traced.lacks_server_entries(traces):
            lockfile = find_lockfile(build.app_dir, source.source_root.resolve(), ctx.config.app.package_manager)
            if not traced.ensure_server_entries_trace(require_tool("node"), build, ctx.paths.cache_dir / "traces",
                                                      lockfile.path if lockfile else None):
                ctx.reporter.info("traced the files a standalone server needs (the build has no standalone output)")
            traces = read_traces(build.next_dir, build.tracing_root)
        return traced.traced_release_ops(build, traces, layout, launcher)
    return release_plan.standalone_release_ops(source, layout, launcher, source.public_dir.is_dir(),
                                               _live_release(ctx))


def _live_release(ctx: Context) -> Path | None:
    """The complete release ``current`` points at, if any (the new release shares its unchanged deps)."""
    live = current_release(ctx)
    release_dir = ctx.paths.release_dir(live) if live else None
    return release_dir if release_dir is not None and is_complete(release_dir) else None


def prepare_release(ctx: Context, source: SourceLayout, layout: ReleaseLayout) -> dict[str, Any]:
    """Check and finish the assembled release; returns facts for its manifest. Raises ReleaseError."""
    config = ctx.config.release
    build = inspect_build(source)
    traces = read_traces(build.next_dir, build.tracing_root)
    reject_escaping(traces, build.tracing_root)
    project_root = source.source_root.resolve()

    ctx.executor.apply_all(include_ops(build, project_root, config.include, layout))
    excluded = exclude_targets(build, project_root, config.exclude, layout)
    ctx.executor.apply_all(Remove(layout.release_dir / relative) for relative in excluded)
    check_traced_files(build, traces, layout, set(excluded))
    reject_links_leaving(layout, [layout.app_dir / name for name in config.shared_files
                                  if (ctx.paths.shared_dir / name).exists()])

    _scrub_key(ctx, layout)
    own_static = skew.list_static(layout)
    ctx.executor.apply_all([MakeDirs(layout.meta_dir),
                            WriteFile(skew.static_list_path(layout), skew.static_list_json(own_static))])
    if config.share_image_cache:
        ctx.executor.apply_all(caches.image_cache_ops(ctx.paths.shared_dir, layout))
    check_node(layout)
    _check_sharp(ctx, build, source, layout)
    warning = caches.isr_warning(build.next_config, _read_json(build.next_dir / "prerender-manifest.json"),
                                 ctx.config.server.instances,
                                 lambda: envcheck.revalidates_in_source(source.source_root))
    if warning:
        ctx.reporter.warn(warning)
    base_path = base_path_of(build.next_config, _read_json(build.next_dir / "routes-manifest.json"))
    # How this release is checked, now and when a rollback brings it back (``nextdeploy.core.checks``).
    checks = planned_checks(ctx.config.health, base_path)
    return {"traced_files": len(traces.files), "static_files": len(own_static), "checks": checks}


def reject_links_leaving(layout: ReleaseLayout, shared_links: list[Path]) -> None:
    """Raise ReleaseError if a symlink in the release resolves outside it (``public/``, ``.next/static``, the
    standalone tree, a post-build step's link): the release would serve, and depend on, files it does not
    hold. ``shared_links``: the links to ``<root>/shared`` nextdeploy made itself."""
    leaving = links_leaving(layout.release_dir, shared_links)
    if leaving:
        named = ", ".join(f"{path} -> {target}" for path, target in leaving[:3])
        more = f" and {len(leaving) - 3} more" if len(leaving) > 3 else ""
        raise ReleaseError(
            f"the release would hold {'a symlink' if len(leaving) == 1 else f'{len(leaving)} symlinks'} that "
            f"{'leaves' if len(leaving) == 1 else 'leave'} it: {named}{more}",
            hint="replace the link in the source (or the build step that makes it) with the file itself; "
                 "a release may only link to files inside it",
        )


# --- include / exclude ------------------------------------------------------------------------------------


def _in_release(build: BuildOutput, project_root: Path, project_rel: str) -> str | None:
    """A project-relative path as a release-relative one; None when it is outside the tracing root."""
    relative = build.root_rel(project_root / project_rel)
    return None if relative == ".." or relative.startswith("../") else relative


def include_ops(build: BuildOutput, project_root: Path, patterns: list[str], layout: ReleaseLayout) -> list[Op]:
    """Copy the files matching ``[release] include`` that the release lacks (links stay links).

    Raises ReleaseError for a match outside the tracing root, or a link leading out of it."""
    if not patterns:
        return []
    ops: list[Op] = []
    outside: list[str] = []
    for project_rel in included_files(project_root, patterns):
        relative = _in_release(build, project_root, project_rel)
        source = project_root / project_rel
        if relative is None:
            outside.append(project_rel)
            continue
        target = layout.release_dir / relative
        if target.exists() or target.is_symlink():
            continue
        if source.is_symlink():
            link = traced.link_target(build.tracing_root, relative, str(source.readlink()))
            if link is None:
                outside.append(f"{project_rel} -> {source.readlink()}")
                continue
            ops.extend([MakeDirs(target.parent),
                        Symlink(posixpath.relpath(link, posixpath.dirname(relative) or "."), target)])
        else:
            ops.append(CopyFile(source, target))
    if outside:
        raise ReleaseError(
            f"[release] include matches {len(outside)} path(s) outside the tracing root {build.tracing_root}",
            hint="include only files inside outputFileTracingRoot (or set it to the workspace root)",
            details=listing(outside),
        )
    return ops


def exclude_targets(build: BuildOutput, project_root: Path, patterns: list[str],
                    layout: ReleaseLayout) -> list[str]:
    """Release-relative paths matching ``[release] exclude`` (patterns are project-relative)."""
    if not patterns:
        return []
    by_project_path: dict[str, str] = {}
    for relative in walk_files(layout.release_dir, prune={META_DIR}):
        project_rel = posixpath.relpath((build.tracing_root / relative).as_posix(), project_root.as_posix())
        if not project_rel.startswith("../"):
            by_project_path[project_rel] = relative
    return sorted(by_project_path[path] for path in excluded_files(by_project_path, patterns))


# --- checks -----------------------------------------------------------------------------------------------


def required_paths(build: BuildOutput, traces: TraceSet) -> set[str]:
    """Release-relative paths the server needs: every traced file and link, and required-server-files."""
    prefix = f"{build.app_rel}/" if build.app_rel else ""
    return traces.files | set(traces.symlinks) | {posixpath.normpath(prefix + f) for f in build.required_files}


def check_traced_files(build: BuildOutput, traces: TraceSet, layout: ReleaseLayout, excluded: set[str]) -> None:
    """Every file the traces name must be in the release, and no traced link may lead out of it; raises
    ReleaseError listing the offending paths (a link left dangling inside the release is fine)."""
    found = check_release_paths(layout.release_dir, required_paths(build, traces))
    if found.escaping:
        raise ReleaseError(
            f"{len(found.escaping)} traced link(s) of the release lead outside it",
            hint="a release must be self-contained: check the build's links (an absolute link into the build dir "
                 "breaks once it is deleted) and [release] include",
            details=listing(found.escaping),
        )
    missing = found.missing
    if not missing:
        return
    by_exclude = [path for path in missing if path in excluded]
    hint = ("the server loads these files: remove the matching [release] exclude pattern (to leave a file out "
            "on purpose, drop it from the trace with outputFileTracingExcludes in next.config)"
            if by_exclude else
            "the build output is incomplete: rebuild; if files are still missing, add them with [release] include "
            "or outputFileTracingIncludes in next.config")
    raise ReleaseError(
        f"{len(missing)} file(s) named by the build's traces are missing from the release"
        + (f" ({len(by_exclude)} removed by [release] exclude)" if by_exclude else ""),
        hint=hint,
        details=listing(missing),
    )


def _scrub_key(ctx: Context, layout: ReleaseLayout) -> None:
    """Remove the Server Actions key Next copied into the release, then make sure no other copy is left."""
    try:
        ctx.executor.apply_all(scrub_ops(layout.next_dir / "server"))
    except ValueError as exc:
        raise ReleaseError(f"cannot read the release's server reference manifest: {exc}",
                           hint="rebuild; if it persists, report it with your Next.js version") from None
    key = stored_server_actions_key(ctx.config, ctx.paths)
    leaks = files_containing(layout.release_dir, key, scanned=_live_release(ctx)) if key else []
    if leaks:
        raise ReleaseError(
            f"the Server Actions key appears in {len(leaks)} file(s) of the release",
            hint="something in the build copies NEXT_SERVER_ACTIONS_ENCRYPTION_KEY into its output "
                 "(e.g. next.config `env`); remove that, the key must stay secret",
            details=listing(leaks),
        )


def check_node(layout: ReleaseLayout) -> None:
    """Refuse a release whose ``next`` needs another Node than this host's (also before a rollback:
    Node may have been upgraded since the release was built)."""
    engines = envcheck.next_engines(layout.app_dir)
    problem = envcheck.node_engine_problem(node_version(require_tool("node")), engines)
    if problem:
        raise ReleaseError(f"refusing to activate: {problem}",
                           hint=f"install a Node.js that satisfies {engines} on this host (see `node --version`)")


def _check_sharp(ctx: Context, build: BuildOutput, source: SourceLayout, layout: ReleaseLayout) -> None:
    policy = ctx.config.release.sharp_check
    if policy == "off" or not envcheck.image_optimization_on(build.next_config):
        return
    if not envcheck.uses_next_image(source.source_root):
        return
    probe = envcheck.probe_sharp(require_tool("node"), layout.app_dir)
    if probe.ok:
        return
    message = (f"the app uses next/image with optimisation on, but sharp does not load from the release "
               f"({probe.error}); every /_next/image request would answer 500")
    hint = (f"build on the server's OS/arch/libc so that {probe.expected} is installed (pnpm: check "
            "supportedArchitectures), or set images.unoptimized in next.config, or set [release] sharp_check")
    if policy == "warn":
        ctx.reporter.warn(f"{message} (fix: {hint})")
        return
    raise ReleaseError(message, hint=hint)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
