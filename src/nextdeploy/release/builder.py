"""Doing the build: source -> build dir -> install -> ``next build`` -> an immutable release.

Never builds in the live release or in the user's working tree. On any failure the release is
logged as failed, its half-made directory and the build dir are removed, and the build log stays.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nextdeploy import __version__
from nextdeploy.core.context import Context
from nextdeploy.core.errors import (
    BuildError,
    DiskFullError,
    HostPathError,
    NextdeployError,
    ProjectError,
    ReleaseError,
    ToolMissingError,
)
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.manifest import tree_stats
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.core.releaselog import now_iso
from nextdeploy.core.steps import StepName
from nextdeploy.host import rootmark
from nextdeploy.host.disk import disk_full_error, is_disk_full, says_disk_full
from nextdeploy.host.files import remove_in_background, remove_path
from nextdeploy.host.tools import (
    find_package_manager,
    find_tool,
    manager_binary,
    manager_prefix,
    node_version,
    package_version,
    require_tool,
    tools_bin,
)
from nextdeploy.nextjs import prepare as nextjs_prepare
from nextdeploy.plans import build as build_plan
from nextdeploy.plans import deps as deps_plan
from nextdeploy.plans import release as release_plan
from nextdeploy.plans.ops import Op, Run, redact_url
from nextdeploy.plans.packagemanager import ManagerChoice, choose_manager, install_failure
from nextdeploy.release.project import (
    ProjectInfo,
    find_lockfile,
    inspect_project,
    lockfile_format,
    pinned_package_manager,
    read_yarnrc,
    standalone_hint,
)

LAUNCHER_SOURCE = Path(__file__).parent.parent / "launcher" / "launcher.cjs"
LOG_TAIL_LINES = 25
DIAGNOSIS_LINES = 200  # of the install log, searched for what a failed install says about the lockfile


@dataclass
class BuiltRelease:
    id: str
    layout: ReleaseLayout
    manifest: dict[str, Any]
    cleanup: threading.Thread | None = None  # removal of the build dir, still running


def prepare_root(ctx: Context) -> None:
    """Create the deploy root's folders, with a clear error when the root is not writable or is not ours
    (a non-empty directory nextdeploy did not create: ``rootmark``)."""
    paths = ctx.paths
    claim = rootmark.check_root(paths.root)
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
        rootmark.mark(paths.root)
    except OSError as exc:
        raise HostPathError(
            f"deploy root {paths.root} is not writable: {exc.strerror}",
            hint="fix its owner/permissions or choose another [server] root",
        ) from None
    if claim is rootmark.Claim.ADOPT:
        ctx.reporter.info(f"marked {paths.root} as a nextdeploy root (made by an earlier version)")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def build_release(ctx: Context, release_id: str, secrets: dict[str, str] | None = None) -> BuiltRelease:
    """Build the configured source into ``releases/<release_id>``; raises on any failure.

    ``secrets`` are env vars for the build (the Server Actions key) that never reach a log."""
    paths = ctx.paths
    ctx.log.append("building", release_id)
    build_dir = paths.build_dir(release_id)
    try:
        local_source = None if ctx.config.app.is_git else Path(ctx.config.source)
        installer = None
        if local_source is not None and local_source.is_dir():
            # Before the export: a package manager that is missing or cannot be installed costs no copy.
            installer = ensure_package_manager(ctx, plan_package_manager(ctx, local_source))
        source, revision = _export_source(ctx, release_id)
        if installer is None:
            installer = ensure_package_manager(ctx, plan_package_manager(ctx, source.source_root))
        info = _inspect_build(ctx, source)
        deps_key = _install_and_build(ctx, release_id, source, info, installer, secrets or {})
        built = _assemble(ctx, release_id, source, info, revision, installer.version)
        if deps_key is not None:
            _hand_on_dependencies(ctx, source, deps_key, build_dir)
    except (NextdeployError, OSError) as exc:
        disk_full = isinstance(exc, DiskFullError) or is_disk_full(exc)
        if isinstance(exc, OSError) and not disk_full:
            remove_path(build_dir)
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
        remove_path(build_dir)
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
    remove_path(ctx.paths.release_dir(release_id))
    remove_path(build_dir)
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
                    f"cannot fetch git source {redact_url(config.source)}: {_first_line(result.stderr)}",
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
                    raise BuildError(f"git checkout of {revision} failed: {_first_line(result.stderr)}")
        else:
            source_dir = Path(config.source)
            if not source_dir.is_dir():
                raise ProjectError(f"source directory {source_dir} does not exist",
                                   hint="fix [app] source in nextdeploy.toml")
            ctx.executor.apply_all(build_plan.export_directory_ops(source_dir, build_src))
            revision = _working_tree_revision(source_dir)
    return SourceLayout(build_src, config.app.path), revision


def _working_tree_revision(source_dir: Path) -> str | None:
    """HEAD of a directory source that is a git work tree, with ``-dirty`` for local changes."""
    git = shutil.which("git")
    if not git or not (source_dir / ".git").exists():
        return None
    head = subprocess.run([git, "-C", str(source_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    if head.returncode != 0:
        return None
    status = subprocess.run([git, "-C", str(source_dir), "status", "--porcelain"], capture_output=True,
                            text=True, check=False)
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def _no_lockfile(ctx: Context) -> ProjectError:
    wanted = ctx.config.app.package_manager
    which = "pnpm-lock.yaml, package-lock.json or yarn.lock" if wanted == "auto" else f"a {wanted} lockfile"
    return ProjectError(
        f"no lockfile ({which}) in {ctx.config.app.path} or above it in the source",
        hint="commit your lockfile (run `pnpm install` / `npm install` / `yarn` once and commit the result)",
    )


def _inspect_build(ctx: Context, source: SourceLayout) -> ProjectInfo:
    info = inspect_project(source.app_dir, source.source_root, prefer=ctx.config.app.package_manager)
    if info.lockfile is None:
        raise _no_lockfile(ctx)
    if info.sets_deployment_id:
        ctx.reporter.warn("next.config sets its own deploymentId: it wins over the release id nextdeploy passes")
    return info


@dataclass(frozen=True)
class Installer:
    """The package manager a build installs and builds with: found on the host, or installed first."""

    choice: ManagerChoice
    binary: str
    version: str | None  # None: not known (a binary that is not an npm install)
    install_rel: str = "."  # where the install runs: the lockfile's directory, relative to the source root
    # Put before PATH for the install and the build, so the app's own scripts (a postinstall, a build
    # script calling `pnpm`) find this same binary: one nextdeploy installed is on no other PATH.
    path: tuple[str, ...] = ()
    setup: list[Op] = field(default_factory=list)  # installing it with npm first

    @property
    def label(self) -> str:
        return f"{self.choice.name} {self.version}" if self.version else self.choice.label


def plan_package_manager(ctx: Context, source_root: Path) -> Installer:
    """The package manager the app pins (or its lockfile needs), and how to get it; installs nothing."""
    config, tools_dir = ctx.config, ctx.paths.tools_dir
    app_dir = (source_root / config.app.path).resolve()
    lockfile = find_lockfile(app_dir, source_root.resolve(), config.app.package_manager)
    if lockfile is None:
        inspect_project(app_dir, source_root.resolve(), config.app.package_manager)  # not an app at all: say that
        raise _no_lockfile(ctx)
    choice = choose_manager(lockfile.package_manager, lockfile.path.name, lockfile_format(lockfile),
                            pinned_package_manager(lockfile, app_dir))
    install_rel = lockfile.install_dir.relative_to(source_root.resolve()).as_posix()
    if choice.name == "npm":
        npm = require_tool("npm")
        return Installer(choice, npm, package_version(npm, "npm"), install_rel)
    found = find_package_manager(choice, tools_dir)
    if found is not None:
        on_path = found[0] == shutil.which(choice.name)
        return Installer(choice, found[0], found[1], install_rel, () if on_path else (str(Path(found[0]).parent),))
    npm_binary = find_tool("npm")
    if npm_binary is None:
        raise ToolMissingError(
            f"{choice.wanted} is needed ({choice.reason}) and was not found, nor npm to install it",
            hint=f"install Node.js with npm (nextdeploy then installs {choice.label} itself), or install "
                 f"{choice.wanted} and put it on PATH",
        )
    prefix = manager_prefix(tools_dir, choice)
    return Installer(choice, str(manager_binary(tools_dir, choice)), choice.exact, install_rel,
                     (str(tools_bin(prefix)),),
                     build_plan.package_manager_install_ops(npm_binary, choice, prefix, config.app.build_timeout))


def ensure_package_manager(ctx: Context, installer: Installer) -> Installer:
    """Install the package manager with npm when the plan says so (once: the next deploy finds it)."""
    for note in installer.choice.notes:
        ctx.reporter.warn(note)
    if not installer.setup:
        return installer
    choice = installer.choice
    prefix = manager_prefix(ctx.paths.tools_dir, choice)
    with ctx.reporter.step(f"install {choice.label} with npm into {prefix} ({choice.reason}; once)",
                           StepName.INSTALL_TOOL):
        for op in installer.setup:
            result = ctx.executor.apply(op)
            if not result.ok:
                remove_path(build_plan.staging_dir(prefix))
                output = (result.stderr or result.stdout).splitlines()
                if says_disk_full(output):
                    raise DiskFullError(f"installing {choice.label} with npm ran out of disk space",
                                        details=output[-LOG_TAIL_LINES:])
                raise ToolMissingError(
                    f"could not install {choice.label} ({choice.reason}) with npm: "
                    f"{_npm_error(result.stderr or result.stdout)}",
                    hint=f"check that npm reaches its registry and that {choice.npm_spec} exists, or install "
                         f"{choice.wanted} yourself and put it on PATH",
                )
        version = package_version(installer.binary, choice.name)
        if not choice.accepts(version):
            raise ToolMissingError(
                f"npm installed {choice.npm_spec} into {prefix}, but {installer.binary} is not {choice.wanted}",
                hint=f"install {choice.wanted} yourself and put it on PATH",
            )
    return replace(installer, version=version, setup=[])


def _npm_error(output: str) -> str:
    """What npm says went wrong (``npm error code ETARGET; npm error notarget No matching version ...``)."""
    lines = [line.strip() for line in output.splitlines()
             if line.startswith(("npm error", "npm ERR!")) and "complete log" not in line
             and line.strip() not in ("npm error", "npm ERR!")]
    return "; ".join(lines[:2]) if lines else _first_line(output)


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
    env = build_plan.build_env(config.app.build_env, deployment_id=release_id)
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
    install = build_plan.install_op(choice, tool, config.app, install_dir,
                                    build_plan.install_env(env, choice, yarnrc, paths.yarn_cache_dir), log_file,
                                    installer.path)
    if key is None or not _take_dependencies(ctx, source, key):
        with ctx.reporter.step(f"install dependencies ({installer.label}, frozen lockfile)",
                               StepName.INSTALL) as step:
            installed = step.check(ctx.executor.apply(install))
            if not installed.ok:
                lockfile = info.lockfile.path.relative_to(source.source_root).as_posix()
                raise _install_error(ctx, installer, install, lockfile, installed.timed_out, log_file)
    build = build_plan.build_op(tool, config.app, source.app_dir, {**env, **secrets}, log_file,
                                frozenset(secrets), installer.path)
    with ctx.reporter.step("build the app (next build)", StepName.BUILD) as step:
        built = step.check(ctx.executor.apply(build))
    if not built.ok:
        if key is not None:
            # The install was good: the next build (the fix of this one, likely) needs none. The failed
            # build's output goes first: on a full disk the cache's two small files need its room.
            remove_path(source.next_dir)
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
                remove_path(source.source_root / rel)
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


def _assemble(ctx: Context, release_id: str, source: SourceLayout, info: ProjectInfo,
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


def _first_line(text: str) -> str:
    stripped = text.strip().splitlines()
    return stripped[-1] if stripped else "no output"
