"""Planning the build: export the source, install with the frozen lockfile, run the app's build."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nextdeploy.config import AppConfig
from nextdeploy.ops import CopyTree, MakeDirs, Op, Remove, Rename, Run
from nextdeploy.project import PackageManager

# Never copied from a directory source: dependencies are installed fresh, build output rebuilt.
IGNORED_IN_SOURCE = ("node_modules", ".next", ".git", ".turbo", ".vercel")


def export_directory_ops(source: Path, build_src: Path) -> list[Op]:
    """Copy a working tree into a fresh build dir, without dependencies or build output."""
    return [Remove(build_src), MakeDirs(build_src), CopyTree(source, build_src, ignore=IGNORED_IN_SOURCE)]


def git_mirror_op(git: str, url: str, mirror_dir: Path, mirror_exists: bool, timeout: float | None = None) -> Run:
    """Create or refresh the cached bare mirror of a git source. Never asks for a password (a deploy has
    nobody to answer it: it would wait forever), and gives up after ``timeout`` s (a remote that hangs)."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if mirror_exists:
        return Run((git, "--git-dir", str(mirror_dir), "fetch", "--prune", "--tags", "--force", "origin"), env=env,
                   timeout=timeout)
    return Run((git, "clone", "--mirror", "--quiet", url, str(mirror_dir)), env=env, timeout=timeout)


def git_resolve_op(git: str, mirror_dir: Path, ref: str) -> Run:
    """Resolve a branch, tag or commit to a full commit id."""
    return Run((git, "--git-dir", str(mirror_dir), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"))


def git_checkout_ops(git: str, mirror_dir: Path, revision: str, build_src: Path) -> list[Op]:
    """A fresh checkout of exactly ``revision`` from the mirror (objects shared, nothing fetched)."""
    return [
        Remove(build_src),
        Run((git, "clone", "--quiet", "--shared", "--no-checkout", str(mirror_dir), str(build_src))),
        Run((git, "-C", str(build_src), "-c", "advice.detachedHead=false", "checkout", "--quiet", revision)),
    ]


def install_argv(tool: str, package_manager: PackageManager, yarn_berry: bool = False) -> tuple[str, ...]:
    """Install exactly what the lockfile says; fail if it is out of date."""
    if package_manager == "pnpm":
        return (tool, "install", "--frozen-lockfile")
    if package_manager == "npm":
        return (tool, "ci", "--no-audit", "--no-fund")
    return (tool, "install", "--immutable") if yarn_berry else (tool, "install", "--frozen-lockfile")


def build_argv(tool: str, build_command: str | None) -> tuple[str, ...]:
    """The app's own build script, or ``[app] build_command`` run by the shell."""
    if build_command:
        return ("sh", "-c", build_command)
    return (tool, "run", "build")


def install_op(tool: str, package_manager: PackageManager, app: AppConfig, cwd: Path, env: Mapping[str, str],
               log_file: Path, secret_env: frozenset[str] = frozenset(), yarn_berry: bool = False) -> Run:
    """The install, niced and bounded by ``[app] build_timeout`` like the build. The values of ``[app]
    build_env`` are secrets (tokens, keys) wherever the command is shown: the log header, a dry run."""
    return Run(install_argv(tool, package_manager, yarn_berry), cwd=cwd, env=env, log_file=log_file,
               timeout=app.build_timeout, secret_env=secret_env.union(app.build_env), nice=app.build_nice)


def build_op(tool: str, app: AppConfig, cwd: Path, env: Mapping[str, str], log_file: Path,
             secret_env: frozenset[str] = frozenset()) -> Run:
    """The app's build, niced and bounded by ``[app] build_timeout``; ``[app] build_env`` values hidden."""
    return Run(build_argv(tool, app.build_command), cwd=cwd, env=env, log_file=log_file,
               timeout=app.build_timeout, secret_env=secret_env.union(app.build_env), nice=app.build_nice)


def build_env(extra: Mapping[str, str], deployment_id: str | None) -> dict[str, str]:
    env = {"NEXT_TELEMETRY_DISABLED": "1", "CI": "1", **extra}
    if deployment_id:
        env["NEXT_DEPLOYMENT_ID"] = deployment_id
    return env


def restore_cache_ops(saved_cache: Path, build_cache: Path) -> list[Op]:
    """Move the kept ``.next/cache`` into the build (a rename: instant on one filesystem)."""
    return [MakeDirs(build_cache.parent), Rename(saved_cache, build_cache)]


def save_cache_ops(build_cache: Path, saved_cache: Path) -> list[Op]:
    return [Remove(saved_cache), MakeDirs(saved_cache.parent), Rename(build_cache, saved_cache)]
