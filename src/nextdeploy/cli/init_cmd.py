"""`nextdeploy init`: inspect a Next.js app, say (or with --apply make) what it must change to deploy, and
write a commented nextdeploy.toml."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import click

from nextdeploy.cli.options import debug_option
from nextdeploy.core.config import DEFAULT_CONFIG_NAME
from nextdeploy.core.errors import ConfigError, ProjectError
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.nextjs.advice import (
    HEALTH_PATH,
    FileChange,
    code_style,
    config_change,
    health_route_file,
    health_route_source,
    new_config_file,
    tracing_root_expression,
    up_to,
)
from nextdeploy.nextjs.nextconfig import major_version, read_next_config
from nextdeploy.release.project import ProjectInfo, find_next_config, inspect_project, standalone_hint

# Lines of the config: code, then "\t# " and its comment; init aligns the comments in one column.
TEMPLATE = """\
# nextdeploy.toml: written by `nextdeploy init` from {app_dir}
# Reference: every key and its default is in docs/config.md (the README's "Configuration reference").

[app]
name = "{name}"\t# PM2 app name: [a-z0-9-]
source = "{source}"\t# a directory, or a git URL / repository path (then set ref)
path = "{path}"\t# the Next.js app inside the source ("." unless a monorepo)
# ref = "main"\t# only for git sources: branch, tag or commit
package_manager = "{package_manager}"\t# auto | pnpm | npm | yarn (detected: {detected})
# build_command = "{build_command}"\t# default: the app's own `build` script
{build_env_line}

[server]
root = "{root}"\t# releases/, shared/, current, the release log, the lock
port = {port}
hostname = "127.0.0.1"\t# put a reverse proxy (nginx, caddy) in front for public traffic
instances = 2\t# PM2 cluster workers
# env = {{ API_URL = "https://api.example.com" }}

[pm2]
# home = "/srv/{name}/.pm2"\t# default: PM2's own (~/.pm2)

[health]
path = "{health_path}"
expect_status = 200
# expect_body = '"status":"ok"'
timeout = 30\t# seconds for a new release to become healthy
stable_for = 3\t# seconds it must then stay up and healthy
{smoke_line}

[release]
shared_files = [".env.production"]\t# linked from <root>/shared/ into every release when present
# mode = "standalone"\t# or "traced": assembled from the .nft.json traces
# include = []\t# globs (from the source root) the tracer missed

[skew]
# keep_assets_of = 5\t# releases whose /_next/static files stay served (open tabs keep working)

[releases]
keep = 5
"""
COMMENT_COLUMN = (32, 44)  # the column comments start at, unless a line's code is longer than the maximum
BUILD_COMMANDS = {"pnpm": "pnpm build", "npm": "npm run build", "yarn": "yarn build"}
# Route segment config that Next 16 rejects with cacheComponents on (its "migrating to Cache Components" guide).
REJECTED_SEGMENT_CONFIG = re.compile(
    r"^export\s+const\s+(dynamic|dynamicParams|revalidate|fetchCache|runtime|experimental_ppr)\b", re.M)
MIDDLEWARE_FILES = tuple(f"{base}{name}.{ext}" for base in ("", "src/") for name in ("middleware", "proxy")
                         for ext in ("ts", "js"))
SKIPPED_DIRS = {"node_modules", ".git", ".next", ".turbo", ".vercel"}


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower().split("/")[-1]).strip("-")
    return slug or "app"


def align_comments(text: str) -> str:
    """Put every ``code\\t# comment`` line's comment in one column (a line whose code is longer gets two spaces)."""
    lines = text.splitlines()
    marked = [line.split("\t", 1)[0] for line in lines if "\t# " in line]
    fitting = [len(code) for code in marked if len(code) + 2 <= COMMENT_COLUMN[1]]
    column = max([COMMENT_COLUMN[0], *(width + 2 for width in fitting)])
    out = []
    for line in lines:
        if "\t# " in line:
            code, comment = line.split("\t", 1)
            code = code.rstrip()
            out.append(f"{code.ljust(column - 1)} {comment}" if code else " " * column + comment)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class Advice:
    """What init says about the app and the changes it proposes (made with --apply)."""

    lines: list[str] = field(default_factory=list)
    changes: list[FileChange] = field(default_factory=list)
    build_env: dict[str, str] = field(default_factory=dict)


def render_config(info: ProjectInfo, config_dir: Path, root: str, port: int,
                  build_env: dict[str, str] | None = None) -> str:
    source = os.path.relpath(info.source_root, config_dir)
    manager = info.lockfile.package_manager if info.lockfile else None
    if build_env:
        pairs = ", ".join(f"{name} = {json.dumps(value)}" for name, value in build_env.items())
        build_env_line = (f"build_env = {{ {pairs} }}\t# next.config reads it: the build must give "
                          'output "standalone"')
    else:
        build_env_line = "# build_env = {}\t# extra env for install and build"
    return align_comments(TEMPLATE.format(
        app_dir=info.app_dir,
        name=_slug(str(info.package_json.get("name") or info.app_dir.name)),
        source=source,
        path=info.app_path,
        package_manager=manager or "auto",
        detected=manager or "no lockfile found",
        build_command=BUILD_COMMANDS.get(manager or "npm"),
        build_env_line=build_env_line,
        root=root,
        port=port,
        health_path=HEALTH_PATH,
        smoke_line=smoke_line(info),
    ))


def smoke_line(info: ProjectInfo) -> str:
    """Smoke-test the home page when there is one: a page that throws fails the release (the health route
    alone would pass), and every new worker loads it before its first user."""
    if info.home_page is None:
        return '# smoke = ["/"]\t# more routes the preflight requests (and new workers warm up on)'
    found = info.home_page.relative_to(info.app_dir).as_posix()
    return (f'smoke = ["/"]\t# {found}: the preflight requests it (a 5xx fails the release),\n'
            "\t# and each new worker once before it takes traffic (warm-up)")


def next_apps_under(root: Path, depth: int = 3) -> list[Path]:
    """The Next.js apps (a package.json depending on ``next``) in the folders under a monorepo root."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        level = len(here.relative_to(root).parts)
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")) \
            if level < depth else []
        if here != root and "package.json" in files and _looks_like_next_app(here):
            found.append(here)
    return sorted(found)


def _looks_like_next_app(directory: Path) -> bool:
    """Depends on ``next`` and has a next.config or a pages/app folder (a workspace library may depend on next)."""
    return _depends_on_next(directory / "package.json") and (
        find_next_config(directory) is not None
        or any((directory / base).is_dir() for base in ("app", "pages", "src/app", "src/pages")))


def _depends_on_next(package_json: Path) -> bool:
    try:
        data = json.loads(package_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and any(isinstance(data.get(section), dict) and "next" in data[section]
                                          for section in ("dependencies", "devDependencies"))


def locate_app(directory: Path, app_path: str | None) -> tuple[Path, Path | None, str | None]:
    """The app dir, the source root (None: found by the inspection) and a note, for APP_DIR and --path."""
    directory = directory.resolve()
    if app_path is not None:
        target = (directory / app_path).resolve()
        if Path(app_path).is_absolute() or not target.is_relative_to(directory) or not target.is_dir():
            raise click.BadParameter(f"{app_path} is not a folder inside {directory}", param_hint="--path")
        return target, directory, None
    if not directory.is_dir() or not (directory / "package.json").is_file() or _looks_like_next_app(directory):
        return directory, None, None
    apps = next_apps_under(directory)
    if not apps and _depends_on_next(directory / "package.json"):
        return directory, None, None  # an app without next.config or pages yet: init says what to add
    names = [app.relative_to(directory).as_posix() for app in apps]
    if len(apps) == 1:
        return apps[0], directory, (f"{directory} is a monorepo root: its Next.js app is {names[0]} "
                                    "(--path picks another folder)")
    if apps:
        raise ProjectError(f"{directory} is a monorepo root with {len(apps)} Next.js apps: {', '.join(names)}",
                           hint=f"say which one: nextdeploy init {directory} --path {names[0]}")
    raise ProjectError(f"{directory / 'package.json'} does not depend on `next`, and no folder under it does",
                       hint="pass the folder of your Next.js app (in a monorepo: the root and --path apps/web)")


@click.command("init")
@click.argument("app_dir", type=click.Path(path_type=Path), default=Path("."))
@click.option("--path", "app_path", metavar="DIR",
              help="The Next.js app inside APP_DIR, a monorepo root (e.g. apps/web) [default: the only one].")
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=Path(DEFAULT_CONFIG_NAME),
              show_default=True, help="Where to write the config.")
@click.option("--root", help="Deploy root on this host [default: /srv/<name>].")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option("--apply", "apply_changes", is_flag=True,
              help="Also make the changes init advises in the app (shown as diffs): add the health route, "
                   "add output/outputFileTracingRoot to next.config. Never overwrites a file.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@debug_option
def init_command(app_dir: Path, app_path: str | None, config_path: Path, root: str | None, port: int,
                 apply_changes: bool, force: bool) -> None:
    """Inspect the Next.js app in APP_DIR and write a commented nextdeploy.toml."""
    reporter = Reporter()
    keep_config = config_path.exists() and not force
    if keep_config and not apply_changes:
        raise ConfigError(f"{config_path} already exists", hint="pass --force to overwrite it")
    located, source_root, note = locate_app(app_dir, app_path)
    info = inspect_project(located, source_root)
    if note:
        reporter.info(note)
    advice = advise(info)
    for line in advice.lines:
        reporter.info(line)
    if advice.changes:
        made = "made" if apply_changes else "`nextdeploy init --apply` makes (or make them yourself)"
        reporter.info(f"the changes {made}:")
        for change in advice.changes:
            for line in change.diff(info.app_dir):
                reporter.info(f"    {line}")
    if apply_changes:
        executor = LocalExecutor()
        for change in advice.changes:
            if change.before is None and change.path.exists():  # never overwrite
                raise ProjectError(f"{change.path} appeared while init ran", hint="run init again")
            executor.apply_all(change.ops())
            reporter.info(f"{'changed' if change.before is not None else 'created'} {change.path}")
    if keep_config:
        reporter.info(f"kept {config_path} as it was (--force rewrites it); next: nextdeploy deploy -c {config_path}")
        return
    name = _slug(str(info.package_json.get("name") or info.app_dir.name))
    text = render_config(info, config_path.resolve().parent, root or f"/srv/{name}", port, advice.build_env)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text, encoding="utf-8")
    reporter.info(f"wrote {config_path}; next: nextdeploy deploy -c {config_path}")


def version_line(info: ProjectInfo) -> str:
    if info.next_installed:
        return f"Next.js {info.next_version} app at {info.app_dir}"
    if re.fullmatch(r"\d+\.\d+\.\d+(?:-[\w.]+)?", info.next_version or ""):
        return f"Next.js {info.next_version} app at {info.app_dir} (from package.json: not installed here)"
    return (f"Next.js app at {info.app_dir}: next {info.next_version} in package.json (a range: not installed "
            "here, so the exact version is not known yet)")


def advise(info: ProjectInfo) -> Advice:
    """What init found, and exactly what to change where something is missing, as file changes."""
    advice = Advice([version_line(info)])
    lines = advice.lines
    if info.lockfile:
        lines.append(f"package manager: {info.lockfile.package_manager} ({info.lockfile.path.name})")
    else:
        lines.append("warning: no lockfile found; deploys install with a frozen lockfile, so commit one first")
    typescript = (info.app_dir / "tsconfig.json").is_file()
    major = major_version(info.next_version)
    config = info.config or read_next_config(info.next_config, None, major)
    where = info.next_config.name if info.next_config else "next.config"
    if info.next_config is None and typescript:
        config = dataclasses.replace(config, language="ts", esm=major is None or major >= 16)
    if config.cache_components:
        lines.append(f"{where}: cacheComponents is on (no route segment config such as `export const dynamic`)")
    tracing_up = None
    if info.workspace_root and info.workspace_root != info.app_dir:
        lines.append(f"monorepo: workspace root {info.workspace_root}, app path {info.app_path}")
        if not info.sets_tracing_root:
            tracing_up = up_to(info.app_path)
            expression, _ = tracing_root_expression(config, tracing_up)
            lines.append(f"warning: set `outputFileTracingRoot: {expression},` in {where} so workspace packages "
                         "are traced into the release")
    output = config.output
    add_output = False
    if info.standalone:
        lines.append("output: 'standalone' is set")
    elif output is not None and output.kind == "code" and output.env_value is not None:
        name, value = output.env_value
        advice.build_env[name] = value
        lines.append(f"output: {where} sets it from `{output.expression}` (line {output.line}); the config "
                     f"written sets [app] build_env {name} = \"{value}\" so the build gives \"standalone\" (a "
                     "build without it stops the deploy with an error; nothing live changes)")
    elif output is not None and output.kind == "code":
        lines.append(f"warning: {standalone_hint(info)}")
    else:
        add_output = output is None
        lines.append(f"warning: standalone output is not set: {standalone_hint(info)}")
    if info.next_config is None:
        advice.changes.append(new_config_file(info.app_dir, config, tracing_up))
    else:
        change = config_change(config, add_output, tracing_up)
        if change is not None:
            advice.changes.append(change)
        elif add_output or tracing_up:
            lines.append(f"  ({where} exports no object literal init can change: make the change by hand)")
    if info.health_route:
        lines.append(f"health route: {info.health_route.relative_to(info.app_dir)}")
        text = info.health_route.read_text(encoding="utf-8", errors="replace")
        if config.cache_components and REJECTED_SEGMENT_CONFIG.search(text):
            lines.append("warning: the health route exports route segment config, which Next rejects with "
                         "cacheComponents on: remove it (`await connection()` from 'next/server' makes it dynamic)")
    else:
        route = health_route_file(info.app_dir, typescript, config.page_extensions)
        source = health_route_source(route, typescript, major, config.cache_components, code_style(info.app_dir))
        lines.append(f"warning: no health route; add {route.relative_to(info.app_dir)} (below), or set "
                     "[health] path to a route you have")
        advice.changes.append(FileChange(route, None, source))
    for name in MIDDLEWARE_FILES:
        found = info.app_dir / name
        if found.is_file() and "api" not in found.read_text(encoding="utf-8", errors="replace"):
            lines.append(f"note: {name} runs before every route it matches: make sure it lets GET {HEALTH_PATH} "
                         "through (an auth redirect there fails every deploy's health check)")
    if info.home_page:
        home = info.home_page.relative_to(info.app_dir)
        lines.append(f"home page: {home} (the preflight requests /, new workers warm up on it: [health] smoke)")
    return advice

