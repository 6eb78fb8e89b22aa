"""Planning the build: export the source, install with the frozen lockfile, run the app's build."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nextdeploy.core.config import AppConfig
from nextdeploy.plans.ops import CopyTree, MakeDirs, Op, Remove, Rename, Run, WriteFile
from nextdeploy.plans.packagemanager import ManagerChoice

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


def working_tree_revision_ops(git: str, source_dir: Path) -> tuple[Run, Run]:
    """The commit checked out in a directory source that is a git work tree, and its local changes."""
    return (Run((git, "-C", str(source_dir), "rev-parse", "HEAD")),
            Run((git, "-C", str(source_dir), "status", "--porcelain")))


def git_checkout_ops(git: str, mirror_dir: Path, revision: str, build_src: Path) -> list[Op]:
    """A fresh checkout of exactly ``revision`` from the mirror (objects shared, nothing fetched)."""
    return [
        Remove(build_src),
        Run((git, "clone", "--quiet", "--shared", "--no-checkout", str(mirror_dir), str(build_src))),
        Run((git, "-C", str(build_src), "-c", "advice.detachedHead=false", "checkout", "--quiet", revision)),
    ]


def build_argv(tool: str, build_command: str | None) -> tuple[str, ...]:
    """The app's own build script, or ``[app] build_command`` run by the shell."""
    if build_command:
        return ("sh", "-c", build_command)
    return (tool, "run", "build")


def install_op(choice: ManagerChoice, tool: str, app: AppConfig, cwd: Path, env: Mapping[str, str],
               log_file: Path, path: tuple[str, ...] = ()) -> Run:
    """The frozen-lockfile install, niced and bounded by ``[app] build_timeout`` like the build. Its ``env``
    holds no nextdeploy secret (any dependency's install script runs with it); the values of ``[app]
    build_env`` are secrets (tokens, keys) wherever the command is shown: the log header, a dry run."""
    return Run(choice.install_argv(tool), cwd=cwd, env=env, log_file=log_file, timeout=app.build_timeout,
               secret_env=frozenset(app.build_env), nice=app.build_nice, path=path)


def build_op(tool: str, app: AppConfig, cwd: Path, env: Mapping[str, str], log_file: Path,
             secret_env: frozenset[str] = frozenset(), path: tuple[str, ...] = ()) -> Run:
    """The app's build, niced and bounded by ``[app] build_timeout``; ``[app] build_env`` values hidden."""
    return Run(build_argv(tool, app.build_command), cwd=cwd, env=env, log_file=log_file,
               timeout=app.build_timeout, secret_env=secret_env.union(app.build_env), nice=app.build_nice,
               path=path)


def install_env(env: Mapping[str, str], choice: ManagerChoice, yarnrc: Mapping[str, str],
                yarn_cache: Path) -> dict[str, str]:
    """The install's environment: the build's, without its secrets (``env`` has none). Yarn 2+ keeps its
    cache (in its global folder) in ``yarn_cache`` between builds, unless .yarnrc.yml or [app] build_env
    chose another folder."""
    if choice.berry and "globalFolder" not in yarnrc and "YARN_GLOBAL_FOLDER" not in env:
        return {"YARN_GLOBAL_FOLDER": str(yarn_cache), **env}
    return dict(env)


def staging_dir(prefix: Path) -> Path:
    """Where a tool is installed before it is renamed to ``prefix``."""
    return prefix.with_name(prefix.name + ".partial")


def package_manager_install_ops(npm: str, choice: ManagerChoice, prefix: Path, timeout: float | None) -> list[Op]:
    """Install the package manager the app wants with npm into its own ``prefix``, through a staging dir
    renamed into place: an interrupted install never leaves half a tool where the next deploy looks.

    A local install in the staging dir (its own package.json), not ``--prefix``: with ``--prefix`` npm reads
    ``<prefix>/etc/npmrc`` as its global config instead of the machine's, and loses the registry, proxy or
    CA settings kept there (Debian's /usr/etc/npmrc names the system's CA file)."""
    staging = staging_dir(prefix)
    return [
        Remove(staging),
        MakeDirs(staging),
        WriteFile(staging / "package.json", '{"private": true}\n'),
        Run((npm, "install", "--no-audit", "--no-fund", "--no-package-lock", choice.npm_spec), cwd=staging,
            timeout=timeout),
        Remove(prefix),
        Rename(staging, prefix),
    ]


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
