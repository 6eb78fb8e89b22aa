"""`nextdeploy init`: inspect a Next.js app and write a commented nextdeploy.toml."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from nextdeploy.cli.options import debug_option
from nextdeploy.config import DEFAULT_CONFIG_NAME
from nextdeploy.errors import ConfigError
from nextdeploy.project import HEALTH_ROUTE_SNIPPET, ProjectInfo, inspect_project, standalone_hint
from nextdeploy.ui import Reporter

TEMPLATE = """\
# nextdeploy.toml: written by `nextdeploy init` from {app_dir}
# Reference: every key and its default is in the README ("Configuration").

[app]
name = "{name}"                 # PM2 app name: [a-z0-9-]
source = "{source}"             # a directory, or a git URL / repository path (then set ref)
path = "{path}"                 # the Next.js app inside the source ("." unless a monorepo)
# ref = "main"                  # only for git sources: branch, tag or commit
package_manager = "{package_manager}"   # auto | pnpm | npm | yarn (detected: {detected})
# build_command = "pnpm build"  # default: the app's own `build` script

[server]
root = "{root}"                 # releases/, shared/, current, the release log, the lock
port = {port}
hostname = "127.0.0.1"          # put a reverse proxy (nginx, caddy) in front for public traffic
instances = 2                   # PM2 cluster workers
# env = {{ API_URL = "https://api.example.com" }}

[pm2]
# home = "/srv/{name}/.pm2"     # default: PM2's own (~/.pm2)

[health]
path = "{health_path}"
expect_status = 200
# expect_body = '"status":"ok"'
timeout = 30                    # seconds for a new release to become healthy
stable_for = 3                  # seconds it must then stay up and healthy
{smoke_line}

[release]
shared_files = [".env.production"]   # linked from <root>/shared/ into every release when present
# mode = "standalone"           # or "traced": assembled from the .nft.json traces
# include = []                  # globs (from the source root) the tracer missed

[skew]
# keep_assets_of = 5            # releases whose /_next/static files stay served (open tabs keep working)

[releases]
keep = 5
"""


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower().split("/")[-1]).strip("-")
    return slug or "app"


def render_config(info: ProjectInfo, config_dir: Path, root: str, port: int) -> str:
    source = os.path.relpath(info.source_root, config_dir)
    detected = info.lockfile.package_manager if info.lockfile else "no lockfile found"
    return TEMPLATE.format(
        app_dir=info.app_dir,
        name=_slug(str(info.package_json.get("name") or info.app_dir.name)),
        source=source,
        path=info.app_path,
        package_manager=info.lockfile.package_manager if info.lockfile else "auto",
        detected=detected,
        root=root,
        port=port,
        health_path="/api/health",
        smoke_line=smoke_line(info),
    )


def smoke_line(info: ProjectInfo) -> str:
    """Smoke-test the home page when there is one: a page that throws fails the release (the health route
    alone would pass), and every new worker loads it before its first user."""
    if info.home_page is None:
        return '# smoke = ["/"]                 # more routes the preflight requests (and new workers warm up on)'
    found = info.home_page.relative_to(info.app_dir).as_posix()
    return (f'smoke = ["/"]                   # {found}: the preflight requests it (a 5xx fails the release),\n'
            "                                # and each new worker once before it takes traffic (warm-up)")


@click.command("init")
@click.argument("app_dir", type=click.Path(path_type=Path), default=Path("."))
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=Path(DEFAULT_CONFIG_NAME),
              show_default=True, help="Where to write the config.")
@click.option("--root", help="Deploy root on this host [default: /srv/<name>].")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@debug_option
def init_command(app_dir: Path, config_path: Path, root: str | None, port: int, force: bool) -> None:
    """Inspect the Next.js app in APP_DIR and write a commented nextdeploy.toml."""
    reporter = Reporter()
    if config_path.exists() and not force:
        raise ConfigError(f"{config_path} already exists", hint="pass --force to overwrite it")
    info = inspect_project(app_dir)
    name = _slug(str(info.package_json.get("name") or info.app_dir.name))
    text = render_config(info, config_path.resolve().parent, root or f"/srv/{name}", port)
    for line in findings(info):
        reporter.info(line)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text, encoding="utf-8")
    reporter.info(f"wrote {config_path}; next: nextdeploy deploy -c {config_path}")


def findings(info: ProjectInfo) -> list[str]:
    """What init found, and exactly what to change where something is missing."""
    lines = [f"Next.js {info.next_version} app at {info.app_dir}"]
    if info.lockfile:
        lines.append(f"package manager: {info.lockfile.package_manager} ({info.lockfile.path.name})")
    else:
        lines.append("warning: no lockfile found; deploys install with a frozen lockfile, so commit one first")
    if info.workspace_root and info.workspace_root != info.app_dir:
        lines.append(f"monorepo: workspace root {info.workspace_root}, app path {info.app_path}")
        if not info.sets_tracing_root:
            lines.append("warning: set outputFileTracingRoot to the workspace root in next.config "
                         "(e.g. path.join(__dirname, '../../')) so workspace packages are traced")
    if info.standalone:
        lines.append("output: 'standalone' is set")
    else:
        lines.append(f"warning: standalone output is not set: {standalone_hint(info)}")
    if info.health_route:
        lines.append(f"health route: {info.health_route.relative_to(info.app_dir)}")
    else:
        lines.append("warning: no health route; add this file, or set [health] path to a route you have:")
        lines.extend(f"    {line}" for line in HEALTH_ROUTE_SNIPPET.splitlines())
    if info.home_page:
        home = info.home_page.relative_to(info.app_dir)
        lines.append(f"home page: {home} (the preflight requests /, new workers warm up on it: [health] smoke)")
    return lines
