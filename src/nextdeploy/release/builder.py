"""Doing the build: source -> build dir -> install -> ``next build`` -> an immutable release.

Never builds in the live release or in the user's working tree. On any failure the release is
logged as failed, its half-made directory and the build dir are removed, and the build log stays.
The package manager is chosen in ``release.installer``, the release assembled in ``release.assemble``.
"""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.context import Context
from nextdeploy.core.errors import (
    BuildError,
    DiskFullError,
    HostPathError,
    NextdeployError,
    ProjectError,
)
from nextdeploy.core.paths import SourceLayout
from nextdeploy.core.steps import StepName
from nextdeploy.host import rootmark
from nextdeploy.host.disk import disk_full_error, is_disk_full, says_disk_full
from nextdeploy.host.files import remove_in_background
from nextdeploy.host.tools import find_tool, require_tool
from nextdeploy.plans import build as build_plan
from nextdeploy.plans import deps as deps_plan
from nextdeploy.plans.ops import Remove, Run, redact_url
from nextdeploy.plans.packagemanager import install_failure
from nextdeploy.release.assemble import BuiltRelease, assemble
from nextdeploy.release.installer import (
    LOG_TAIL_LINES,
    Installer,
    ensure_package_manager,
    last_output_line,
    no_lockfile,
    plan_package_manager,
)
from nextdeploy.release.project import ProjectInfo, inspect_project, read_yarnrc, standalone_hint

DIAGNOSIS_LINES = 200  # of the install log, searched for what a failed install says about the lockfile


def prepare_root(ctx: Context) -> None:
    """Create the deploy root's folders (``rootmark.prepare_root``); say so when an earlier version's root is
    adopted."""
    if rootmark.prepare_root(ctx.paths) is rootmark.Claim.ADOPT:
        ctx.reporter.info(f"marked {ctx.paths.root} as a nextdeploy root (made by an earlier version)")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def build_release(ctx: Context, release_id: str, secrets: dict[str, str] | None = None,
                  revision: str | None = None) -> BuiltRelease:
    """Build the configured source into ``releases/<release_id>``; raises on any failure.

    ``secrets`` are env vars for the build (the Server Actions key) that never reach a log. ``revision``:
    a directory source's revision when the directory cannot tell (a copy of a work tree without its .git)."""
    paths = ctx.paths
    ctx.log.append("building", release_id)
    build_dir = paths.build_dir(release_id)
    try:
        local_source = None if ctx.config.app.is_git else Path(ctx.config.source)
        installer = None
        if local_source is not None and local_source.is_dir():
            # Before the export: a package manager that is missing or cannot be installed costs no copy.
            installer = ensure_package_manager(ctx, plan_package_manager(ctx, local_source))
        source, found = _export_source(ctx, release_id)
        revision = found or revision
        if installer is None:
            installer = ensure_package_manager(ctx, plan_package_manager(ctx, source.source_root))
        info = _inspect_build(ctx, source)
        deps_key = _install_and_build(ctx, release_id, source, info, installer, secrets or {})
        built = assemble(ctx, release_id, source, info, revision, installer.version)
        if deps_key is not None:
            _hand_on_dependencies(ctx, source, deps_key, build_dir)
    except (NextdeployError, OSError) as exc:
        disk_full = isinstance(exc, DiskFullError) or is_disk_full(exc)
        if isinstance(exc, OSError) and not disk_full:
            ctx.executor.apply(Remove(build_dir))
            raise  # a bug (an OSError we did not expect): shown as such
        reason = exc.message if isinstance(exc, NextdeployError) else str(exc)
        _discard(ctx, release_id, build_dir, reason)
        if disk_full:
            # Measured now that this build's files are gone: what the next try has.
            details = exc.details if isinstance(exc, NextdeployError) else [f"  | {exc}"]
            raise disk_full_error(paths.root, f"building release {release_id}", details) from None
        raise
    except BaseException:
        # An interrupt: the release dir stays, marked unfinished; the next run cleans it.
        ctx.executor.apply(Remove(build_dir))
        raise
    ctx.log.append("built", release_id, revision=revision, files=built.manifest["files"],
                   bytes=built.manifest["bytes"])
    # Deleting the build dir (thousands of node_modules files) takes seconds: do it while the
    # preflight waits out its stability window. deploy() joins it; recover() sweeps leftovers.
    built.cleanup = remove_in_background(build_dir)
    return built


def _discard(ctx: Context, release_id: str, build_dir: Path, reason: str) -> None:
    """Log a failed build and remove what it made. On a full disk the log line may fit only once the
    half-made release is gone: then it is written after the removal."""
    try:
        ctx.log.append("failed", release_id, reason=reason)
        logged = True
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        logged = False
    ctx.executor.apply(Remove(ctx.paths.release_dir(release_id)))
    ctx.executor.apply(Remove(build_dir))
    if not logged:
        ctx.log.append("failed", release_id, reason=reason)


def _export_source(ctx: Context, release_id: str) -> tuple[SourceLayout, str | None]:
    config, paths = ctx.config, ctx.paths
    revision: str | None
    build_src = paths.build_dir(release_id) / "src"
    with ctx.reporter.step("export source", StepName.EXPORT):
        if config.app.is_git:
            git = require_tool("git")
            mirror = paths.git_mirror_dir
            result = ctx.executor.apply(build_plan.git_mirror_op(git, config.source, mirror, mirror.exists(),
                                                                 config.app.build_timeout))
            if not result.ok:
                raise BuildError(
                    f"cannot fetch git source {redact_url(config.source)}: {last_output_line(result.stderr)}",
                    hint="check [app] source (a reachable git URL or repository path, with credentials that "
                         "need no prompt: an SSH key or a credential helper)" + (
                             ", or raise [app] build_timeout" if result.timed_out else ""),
                )
            ref = config.app.ref or "HEAD"
            resolved = ctx.executor.apply(build_plan.git_resolve_op(git, mirror, ref))
            revision = resolved.stdout.strip()
            if not resolved.ok or not revision:
                raise BuildError(f"git ref {ref!r} not found in {redact_url(config.source)}",
                                 hint="set [app] ref to an existing branch, tag or commit")
            for op in build_plan.git_checkout_ops(git, mirror, revision, build_src):
                result = ctx.executor.apply(op)
                if not result.ok:
                    raise BuildError(f"git checkout of {revision} failed: {last_output_line(result.stderr)}")
        else:
            source_dir = Path(config.source)
            if not source_dir.is_dir():
                raise ProjectError(f"source directory {source_dir} does not exist",
                                   hint="fix [app] source in nextdeploy.toml")
            ctx.executor.apply_all(build_plan.export_directory_ops(source_dir, build_src))
            revision = working_tree_revision(ctx, source_dir)
    return SourceLayout(build_src, config.app.path), revision


def working_tree_revision(ctx: Context, source_dir: Path) -> str | None:
    """HEAD of a directory source that is a git work tree, with ``-dirty`` for local changes."""
    git = find_tool("git")
    if not git or not (source_dir / ".git").exists():
        return None
    head_op, status_op = build_plan.working_tree_revision_ops(git, source_dir)
    head = ctx.executor.apply(head_op)
    if not head.ok:
        return None
    status = ctx.executor.apply(status_op)
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def _inspect_build(ctx: Context, source: SourceLayout) -> ProjectInfo:
    info = inspect_project(source.app_dir, source.source_root, prefer=ctx.config.app.package_manager)
    if info.lockfile is None:
        raise no_lockfile(ctx)
    if info.sets_deployment_id:
        ctx.reporter.warn("next.config sets its own deploymentId: it wins over the release id nextdeploy passes")
    return info


def _install_error(ctx: Context, installer: Installer, install: Run, lockfile: str, timed_out: bool,
                   log_file: Path) -> NextdeployError:
    """What a failed install says: the disk is full, the lockfile is not for this package manager (or out of
    date), or another error shown from the log."""
    command = f"`{installer.choice.name} {' '.join(install.argv[1:])}`"
    if timed_out:
        return _timed_out(ctx, command, log_file)
    tail = log_tail(log_file)
    if says_disk_full(tail):
        return DiskFullError(f"{command} ran out of disk space", details=tail)
    lockfile_problem = install_failure(installer.choice, installer.version, lockfile,
                                       log_tail(log_file, DIAGNOSIS_LINES))
    if lockfile_problem is not None:
        what, fix = lockfile_problem
        return BuildError(f"{what} (full log: {log_file})", hint=f"{fix}; nothing live was changed", details=tail)
    return BuildError(f"{command} failed (full log: {log_file})",
                      hint="fix the dependency error shown above, then deploy again; nothing live was changed",
                      details=tail)


def install_op(ctx: Context, release_id: str, installer: Installer, install_dir: Path,
               yarnrc: dict[str, str]) -> Run:
    """The dependencies' install (frozen lockfile) in ``install_dir``, logged to the release's build log."""
    config, paths = ctx.config, ctx.paths
    env = build_plan.build_env(config.app.build_env, deployment_id=release_id)
    return build_plan.install_op(installer.choice, installer.binary, config.app, install_dir,
                                 build_plan.install_env(env, installer.choice, yarnrc, paths.yarn_cache_dir),
                                 paths.build_log(release_id), installer.path)


def build_op(ctx: Context, release_id: str, installer: Installer, source: SourceLayout,
             secrets: dict[str, str]) -> Run:
    """``next build`` with the release id as its deployment id; ``secrets`` in its env only, never shown."""
    config = ctx.config
    env = build_plan.build_env(config.app.build_env, deployment_id=release_id)
    return build_plan.build_op(installer.binary, config.app, source.app_dir, {**env, **secrets},
                               ctx.paths.build_log(release_id), frozenset(secrets), installer.path)


def _install_and_build(ctx: Context, release_id: str, source: SourceLayout, info: ProjectInfo,
                       installer: Installer, secrets: dict[str, str]) -> str | None:
    """Install (or reuse the last build's node_modules) and build. Returns the dependencies' cache key,
    or None when they are not to be handed on (reuse off, yarn Plug'n'Play).

    ``secrets`` (the Server Actions key) are in the build's environment only: any dependency's install
    script runs in the install's."""
    config, paths = ctx.config, ctx.paths
    assert info.lockfile is not None
    choice, tool = installer.choice, installer.binary
    log_file = paths.build_log(release_id)
    install_dir = info.lockfile.install_dir
    yarnrc = read_yarnrc(install_dir) if choice.berry else {}

    saved_cache = paths.next_cache_dir / _cache_key(config.app.path)
    if saved_cache.is_dir():
        ctx.executor.apply_all(build_plan.restore_cache_ops(saved_cache, source.next_cache_dir))

    key = None
    if config.app.reuse_dependencies:
        blocker = deps_plan.reuse_blocker(choice, yarnrc, config.app.build_env)
        if blocker is not None:
            ctx.reporter.info(f"note: {blocker}")
        else:
            inputs = deps_plan.scan_source(source.source_root).inputs
            key = deps_plan.deps_key(inputs, choice.name, tool, require_tool("node"), config.app.build_env)
    install = install_op(ctx, release_id, installer, install_dir, yarnrc)
    if key is None or not _take_dependencies(ctx, source, key):
        with ctx.reporter.step(f"install dependencies ({installer.label}, frozen lockfile)",
                               StepName.INSTALL) as step:
            installed = step.check(ctx.executor.apply(install))
            if not installed.ok:
                lockfile = info.lockfile.path.relative_to(source.source_root).as_posix()
                raise _install_error(ctx, installer, install, lockfile, installed.timed_out, log_file)
    build = build_op(ctx, release_id, installer, source, secrets)
    with ctx.reporter.step("build the app (next build)", StepName.BUILD) as step:
        built = step.check(ctx.executor.apply(build))
    if not built.ok:
        if key is not None:
            # The install was good: the next build (the fix of this one, likely) needs none. The failed
            # build's output goes first: on a full disk the cache's two small files need its room.
            ctx.executor.apply(Remove(source.next_dir))
            _hand_on_dependencies(ctx, source, key, paths.build_dir(release_id))
        if built.timed_out:
            raise _timed_out(ctx, "the build", log_file)
        tail = log_tail(log_file)
        if says_disk_full(tail):
            raise DiskFullError("the build ran out of disk space", details=tail)
        raise BuildError(
            f"the build failed (full log: {log_file})",
            hint="fix the build error shown above, then deploy again; nothing live was changed",
            details=tail,
        )
    if source.next_cache_dir.is_dir():
        ctx.executor.apply_all(build_plan.save_cache_ops(source.next_cache_dir, saved_cache))
    if config.release.mode == "standalone" and not source.standalone_dir.is_dir():
        raise ProjectError(
            f"the build produced no standalone output ({source.standalone_dir} is missing)",
            hint=standalone_hint(info),
        )
    return key


def _timed_out(ctx: Context, what: str, log_file: Path) -> BuildError:
    """A hung install or build was killed, with everything it started, at ``[app] build_timeout``."""
    limit = f"{ctx.config.app.build_timeout:g}"
    return BuildError(
        f"{what} did not finish within {limit} s and was stopped (full log: {log_file})",
        hint="find what hangs from the log above (an open handle or a request that never returns at build "
             f"time), or raise [app] build_timeout ({limit}); nothing live was changed",
        details=log_tail(log_file),
    )


def _take_dependencies(ctx: Context, source: SourceLayout, key: str) -> bool:
    """Move the last successful build's node_modules in, if they were installed from the same inputs."""
    cache = ctx.paths.deps_cache_dir
    dirs = deps_plan.cached_dirs(cache, key)
    if dirs is None or any((source.source_root / rel).exists() for rel in dirs):
        return False
    with ctx.reporter.step("install dependencies: unchanged, reusing the last build's node_modules",
                           StepName.INSTALL) as step:
        try:
            ctx.executor.apply_all(deps_plan.take_ops(cache, dirs, source.source_root))
        except (OSError, HostPathError) as exc:
            step.failed = True
            # Half taken: clear what arrived and install from scratch (the cache is void: its key is gone).
            ctx.reporter.warn(f"could not reuse the cached node_modules ({exc}); installing")
            for rel in dirs:
                ctx.executor.apply(Remove(source.source_root / rel))
            return False
    return True


def _hand_on_dependencies(ctx: Context, source: SourceLayout, key: str, build_dir: Path) -> None:
    """Keep this build's node_modules for the next build (renames; the old cache goes to the trash)."""
    dirs = deps_plan.scan_source(source.source_root).node_modules
    if not dirs:
        return
    cache = ctx.paths.deps_cache_dir
    try:
        ctx.executor.apply_all(deps_plan.hand_on_ops(source.source_root, dirs, key, cache, build_dir / "trash",
                                                     cache_exists=cache.exists()))
    except (OSError, HostPathError) as exc:  # only costs the next build an install
        ctx.reporter.warn(f"could not keep node_modules for the next build: {exc}")


def _cache_key(app_path: str) -> str:
    return "root" if app_path in ("", ".") else app_path.strip("/").replace("/", "__")
