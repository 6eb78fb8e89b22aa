"""The package manager a build uses: the one the app pins (or its lockfile needs), found on the host or
installed with npm into the deploy root's tools (once: the next deploy finds it)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from nextdeploy.core.context import Context
from nextdeploy.core.errors import DiskFullError, ProjectError, ToolMissingError
from nextdeploy.core.steps import StepName
from nextdeploy.host.disk import says_disk_full
from nextdeploy.host.tools import (
    find_package_manager,
    find_tool,
    manager_binary,
    manager_prefix,
    npm_globalconfig,
    package_version,
    require_tool,
    tools_bin,
)
from nextdeploy.plans import build as build_plan
from nextdeploy.plans.ops import Op, Remove
from nextdeploy.plans.packagemanager import ManagerChoice, choose_manager
from nextdeploy.release.project import (
    find_lockfile,
    inspect_project,
    lockfile_format,
    pinned_package_manager,
)

LOG_TAIL_LINES = 25


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
        raise no_lockfile(ctx)
    choice = choose_manager(lockfile.package_manager, lockfile.path.name, lockfile_format(lockfile),
                            pinned_package_manager(lockfile, app_dir))
    install_rel = lockfile.install_dir.relative_to(source_root.resolve()).as_posix()
    if choice.name == "npm":
        npm = require_tool("npm")
        return Installer(choice, npm, package_version(npm, "npm"), install_rel)
    found = find_package_manager(choice, tools_dir)
    if found is not None:
        on_path = found[0] == find_tool(choice.name)
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
                     build_plan.package_manager_install_ops(npm_binary, choice, prefix, config.app.build_timeout,
                                                            npm_globalconfig(npm_binary)))


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
                ctx.executor.apply(Remove(build_plan.staging_dir(prefix)))
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
    return "; ".join(lines[:2]) if lines else last_output_line(output)


def no_lockfile(ctx: Context) -> ProjectError:
    wanted = ctx.config.app.package_manager
    which = "pnpm-lock.yaml, package-lock.json or yarn.lock" if wanted == "auto" else f"a {wanted} lockfile"
    return ProjectError(
        f"no lockfile ({which}) in {ctx.config.app.path} or above it in the source",
        hint="commit your lockfile (run `pnpm install` / `npm install` / `yarn` once and commit the result)",
    )


def last_output_line(text: str) -> str:
    """The last line a failed command printed (where git and npm say why), or "no output"."""
    stripped = text.strip().splitlines()
    return stripped[-1] if stripped else "no output"
