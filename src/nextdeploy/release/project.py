"""Inspecting a Next.js project on disk: package manager, Next.js version, standalone output,
monorepo root, health route. Used by ``init`` and by the build to decide what to run.

Only reads files; never runs the project's code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nextdeploy.core.errors import ProjectError
from nextdeploy.nextjs.nextconfig import NextConfig, major_version, read_next_config

PackageManager = Literal["pnpm", "npm", "yarn"]

LOCKFILES: dict[str, PackageManager] = {
    "pnpm-lock.yaml": "pnpm",
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
    "yarn.lock": "yarn",
}
NEXT_CONFIG_NAMES = ("next.config.js", "next.config.mjs", "next.config.ts", "next.config.cjs", "next.config.mts")
HEALTH_ROUTE_CANDIDATES = tuple(
    f"{base}{route}.{ext}"
    for base in ("app/", "src/app/")
    for route in ("api/health/route",)
    for ext in ("ts", "js", "tsx", "jsx", "mjs")
) + tuple(f"{base}api/health.{ext}" for base in ("pages/", "src/pages/") for ext in ("ts", "js"))
PAGE_EXTENSIONS = ("tsx", "ts", "jsx", "js", "mdx")
_ROUTE_GROUP = re.compile(r"^\(.+\)$")  # app/(marketing)/page.tsx is still "/"



@dataclass(frozen=True)
class Lockfile:
    package_manager: PackageManager
    path: Path

    @property
    def install_dir(self) -> Path:
        """Where to run the install: the lockfile's directory (the workspace root in a monorepo)."""
        return self.path.parent


@dataclass
class ProjectInfo:
    """What ``init`` and the build need to know about an app."""

    app_dir: Path
    source_root: Path
    package_json: dict[str, Any]
    lockfile: Lockfile | None
    next_version: str | None
    next_config: Path | None
    standalone: bool
    sets_tracing_root: bool
    sets_deployment_id: bool
    workspace_root: Path | None
    health_route: Path | None
    home_page: Path | None = None  # the page that serves "/", if the app has one
    warnings: list[str] = field(default_factory=list)
    config: NextConfig | None = None  # what next.config.* says (read as text, never run)
    next_installed: bool = False  # next_version is the installed version, not package.json's range

    @property
    def app_path(self) -> str:
        """The app's path inside the source root, '.' when they are the same."""
        relative = self.app_dir.relative_to(self.source_root)
        return relative.as_posix() if relative.parts else "."


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}", hint="fix or restore the file") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path} is not a JSON object", hint="fix or restore the file")
    return data


def _ancestors(start: Path, stop: Path) -> list[Path]:
    """``start`` and its parents up to and including ``stop`` (``start`` must be inside ``stop``)."""
    chain = [start]
    current = start
    while current != stop and current.parent != current:
        current = current.parent
        chain.append(current)
    return chain


def find_lockfile(app_dir: Path, source_root: Path, prefer: str = "auto") -> Lockfile | None:
    """The nearest lockfile from the app dir up to the source root; ``prefer`` picks among several."""
    for directory in _ancestors(app_dir, source_root):
        found = [Lockfile(manager, directory / name) for name, manager in LOCKFILES.items()
                 if (directory / name).is_file()]
        if not found:
            continue
        if prefer != "auto":
            matching = [lock for lock in found if lock.package_manager == prefer]
            if matching:
                return matching[0]
            continue
        declared = _declared_package_manager(directory / "package.json")
        for lock in found:
            if lock.package_manager == declared:
                return lock
        return found[0]
    return None


def _declared_package_manager(package_json: Path) -> str | None:
    """The name in package.json's ``packageManager`` field (``pnpm@9.1.0`` -> ``pnpm``)."""
    value = package_manager_field(package_json)
    return value.split("@", 1)[0] if isinstance(value, str) else None


def package_manager_field(package_json: Path) -> object:
    """package.json's ``packageManager`` value as written (``pnpm@8.15.6+sha512...``), None if absent."""
    if not package_json.is_file():
        return None
    try:
        data = json.loads(package_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("packageManager") if isinstance(data, dict) else None


def pinned_package_manager(lockfile: Lockfile, app_dir: Path) -> object:
    """The ``packageManager`` that governs an install: the workspace root's (the lockfile's directory), else
    the app's."""
    for directory in dict.fromkeys((lockfile.install_dir, app_dir)):
        value = package_manager_field(directory / "package.json")
        if value is not None:
            return value
    return None


_PNPM_LOCKFILE_VERSION = re.compile(r"""^lockfileVersion:\s*['"]?([0-9][0-9.]*)['"]?\s*$""", re.M)
_YARN_METADATA_VERSION = re.compile(r"""^__metadata:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+version:[ \t]*['"]?(\d+)""", re.M)


def lockfile_format(lockfile: Lockfile) -> str | None:
    """The lockfile's format: pnpm's lockfileVersion ("6.0"), yarn.lock's ``__metadata`` version ("6", yarn 2+;
    "1" for a yarn 1 lockfile, which has none); None for npm or when unreadable."""
    try:
        with lockfile.path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if lockfile.package_manager == "pnpm":
        match = _PNPM_LOCKFILE_VERSION.search(head)
        return match.group(1) if match else None
    if lockfile.package_manager == "yarn":
        match = _YARN_METADATA_VERSION.search(head)
        return match.group(1) if match else "1"
    return None


def read_yarnrc(directory: Path) -> dict[str, str]:
    """The top-level scalar settings of ``.yarnrc.yml`` (nodeLinker, globalFolder, ...); {} without one."""
    try:
        text = (directory / ".yarnrc.yml").read_text(encoding="utf-8")
    except OSError:
        return {}
    settings: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"""^([A-Za-z][A-Za-z0-9]*):[ \t]*("[^"]*"|'[^']*'|[^#]*?)[ \t]*(?:#.*)?$""", line)
        if match and match.group(2):
            settings[match.group(1)] = match.group(2).strip("'\"")
    return settings


def find_workspace_root(app_dir: Path, source_root: Path) -> Path | None:
    """The nearest directory from the app up to the source root with a pnpm workspace file or
    package.json ``workspaces``."""
    for directory in _ancestors(app_dir, source_root):
        if (directory / "pnpm-workspace.yaml").is_file() or _has_workspaces(directory):
            return directory
    return None


def find_next_config(app_dir: Path) -> Path | None:
    for name in NEXT_CONFIG_NAMES:
        if (app_dir / name).is_file():
            return app_dir / name
    return None


def installed_next_version(app_dir: Path, source_root: Path) -> str | None:
    """The version of the ``next`` package that resolves from the app: its node_modules, or one a workspace
    manager hoisted up to the source root."""
    for directory in _ancestors(app_dir, source_root if app_dir.is_relative_to(source_root) else app_dir):
        installed = directory / "node_modules" / "next" / "package.json"
        if installed.is_file():
            try:
                version = json.loads(installed.read_text(encoding="utf-8")).get("version")
            except (OSError, json.JSONDecodeError, AttributeError):
                return None
            return version if isinstance(version, str) else None
    return None


def next_version(app_dir: Path, package_json: dict[str, Any], source_root: Path | None = None) -> str | None:
    """The installed Next.js version if node_modules is there, else the declared range."""
    installed = installed_next_version(app_dir, source_root or app_dir)
    if installed is not None:
        return installed
    for section in ("dependencies", "devDependencies"):
        declared = package_json.get(section, {}).get("next")
        if isinstance(declared, str):
            return declared
    return None


def inspect_project(app_dir: Path, source_root: Path | None = None, prefer: str = "auto") -> ProjectInfo:
    """Inspect a Next.js app; raises ProjectError when ``app_dir`` is not one."""
    app_dir = app_dir.resolve()
    if not app_dir.is_dir():
        raise ProjectError(f"{app_dir} is not a directory", hint="pass the directory of your Next.js app")
    package_json_path = app_dir / "package.json"
    if not package_json_path.is_file():
        raise ProjectError(
            f"{app_dir} has no package.json, so it is not a Next.js app",
            hint="point [app] source (and [app] path in a monorepo) at the folder with next.config.* and package.json",
        )
    package_json = read_json(package_json_path)
    version = next_version(app_dir, package_json)
    if version is None:
        raise ProjectError(
            f"{package_json_path} does not depend on `next`, so it is not a Next.js app",
            hint="point [app] source (and [app] path in a monorepo) at your Next.js app",
        )
    root = (source_root or _guess_source_root(app_dir)).resolve()
    installed = installed_next_version(app_dir, root)
    version = installed or version
    config_path = find_next_config(app_dir)
    module_type = package_json.get("type")
    config = read_next_config(config_path, module_type if isinstance(module_type, str) else None,
                              major_version(version))
    health = next((app_dir / c for c in HEALTH_ROUTE_CANDIDATES if (app_dir / c).is_file()), None) or next(
        (found for base in ("app", "src/app") for found in sorted((app_dir / base / "api" / "health").glob("route.*"))
         if found.is_file()), None)  # route.page.ts and the like, for custom pageExtensions
    return ProjectInfo(
        app_dir=app_dir,
        source_root=root,
        package_json=package_json,
        lockfile=find_lockfile(app_dir, root, prefer),
        next_version=version,
        next_config=config_path,
        standalone=config.output is not None and config.output.kind == "standalone",
        sets_tracing_root=config.sets_tracing_root,
        sets_deployment_id=config.sets_deployment_id,
        workspace_root=find_workspace_root(app_dir, root),
        health_route=health,
        home_page=find_home_page(app_dir),
        config=config,
        next_installed=installed is not None,
    )


def find_home_page(app_dir: Path) -> Path | None:
    """The file that renders "/": app/page.* (also inside route groups such as app/(site)/) or pages/index.*."""
    for base in ("app", "src/app"):
        directory = app_dir / base
        if not directory.is_dir():
            continue
        candidates = [directory / f"page.{ext}" for ext in PAGE_EXTENSIONS]
        for group in sorted(directory.rglob("page.*")):
            between = group.parent.relative_to(directory).parts
            if between and all(_ROUTE_GROUP.match(part) for part in between):
                candidates.append(group)
        found = next((path for path in candidates if path.is_file() and path.suffix[1:] in PAGE_EXTENSIONS), None)
        if found is not None:
            return found
    for base in ("pages", "src/pages"):
        found = next((app_dir / base / f"index.{ext}" for ext in PAGE_EXTENSIONS
                      if (app_dir / base / f"index.{ext}").is_file()), None)
        if found is not None:
            return found
    return None


def _guess_source_root(app_dir: Path) -> Path:
    """For ``init``: the workspace root above the app (a monorepo), else the app itself.

    The search stops at the repository root (a ``.git`` folder) so an unrelated parent never counts.
    """
    for directory in _ancestors(app_dir, Path(app_dir.anchor)):
        if directory != app_dir and (
            (directory / "pnpm-workspace.yaml").is_file() or _has_workspaces(directory)
        ):
            return directory
        if (directory / ".git").exists():
            break
    return app_dir


def _has_workspaces(directory: Path) -> bool:
    package_json = directory / "package.json"
    try:
        return package_json.is_file() and "workspaces" in json.loads(package_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


def standalone_hint(info: ProjectInfo) -> str:
    """Exactly what to change in next.config (or the build's env) to get standalone output."""
    where = info.next_config.name if info.next_config else "next.config.mjs"
    output = info.config.output if info.config else None
    if output is not None and output.kind == "export":
        return f'change `output: {output.expression}` to `output: "standalone"` in {where} (line {output.line})'
    if output is not None and output.kind == "code":
        if output.env_value is not None:
            name, value = output.env_value
            return (f"{where} sets output from `{output.expression}` (line {output.line}): set {name} so it "
                    f'gives "standalone": [app] build_env = {{ {name} = "{value}" }} in nextdeploy.toml')
        if "standalone" not in output.expression and not re.search(r"[\w$]\s*\(", output.expression):
            # Literals and env vars only, e.g. process.env.EXPORT ? 'export' : undefined
            example = output.expression.replace("undefined", "'standalone'")
            instead = f" (e.g. `{example}`)" if example != output.expression else ""
            return (f"{where} sets output from `{output.expression}` (line {output.line}), which never gives "
                    f'"standalone": change it so it does{instead}')
        names = ", ".join(output.env_vars) or "the condition it depends on"
        return (f"{where} sets output from `{output.expression}` (line {output.line}): make it give "
                f'"standalone" when nextdeploy builds (set {names} in [app] build_env)')
    typed = info.config is not None and (info.config.language == "js" or info.config.typed)
    q = info.config.quote if info.config else '"'
    value = f"{q}standalone{q}" if typed or info.config is None else f"{q}standalone{q} as const"
    return f"add `output: {value},` to the config object in {where}"
