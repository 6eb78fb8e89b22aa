"""Building a fleet's release once, on the controller, with today's builder and its checks: in
``<build dir>/work`` (``[build] dir``, default ``~/.cache/nextdeploy/<app>``; ``fleet.setup`` keeps its
wheels beside it) as the root of its releases, builds, caches and git mirror; never under ``[server] root``,
never with PM2. The release is shipped from ``<build dir>/work/releases/<id>``; the controller keeps only
the newest one."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.core.config import Config
from nextdeploy.core.context import Context
from nextdeploy.core.fleetconfig import BuildConfig, RolloutConfig, SshConfig
from nextdeploy.core.ids import is_release_id, new_release_id
from nextdeploy.core.paths import UNFINISHED_MARKER, DeployPaths
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.setup import build_dir
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.host.lock import DeployLock
from nextdeploy.plans.ops import MakeDirs, Remove, Rename
from nextdeploy.procedures.retention import sweep_trash
from nextdeploy.release import builder
from nextdeploy.release.assemble import BuiltRelease
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV, stored_server_actions_key

WORK_DIR = "work"  # under [build] dir: the controller's deploy root (its releases, builds and caches)
KEEP_ON_CONTROLLER = 1  # releases kept under <build dir>/releases (the hosts keep their own)


def controller_config(config: Config) -> Config:
    """The config as the controller builds with it: ``<build dir>/work`` as the root, no fleet sections."""
    server = config.server.model_copy(update={"root": str(build_dir(config) / WORK_DIR)})
    return config.model_copy(update={"server": server, "hosts": [], "ssh": SshConfig(),
                                     "rollout": RolloutConfig(), "build": BuildConfig()})


def controller_context(config: Config, reporter: Reporter) -> Context:
    return Context(controller_config(config), LocalExecutor(echo=reporter.info), reporter)


def controller_key(config: Config) -> str | None:
    """The Server Actions key the controller kept from an earlier build (never made here)."""
    ctx_config = controller_config(config)
    return stored_server_actions_key(ctx_config, DeployPaths(ctx_config.root))


@dataclass
class ControllerBuild:
    release: BuiltRelease
    release_dir: Path


def build_once(ctx: Context, key: str) -> ControllerBuild:
    """Build a new release under the controller's build dir, with the fleet's Server Actions ``key`` (a
    build-time env). One build at a time per build dir (its build lock)."""
    builder.prepare_root(ctx)
    with DeployLock(ctx.paths.build_lock_file, "nextdeploy deploy (fleet build)", 0.0):
        clear_leftovers(ctx)
        release_id = new_release_id()
        ctx.reporter.info(f"release {release_id} (built on this machine in {ctx.paths.root})")
        built = builder.build_release(ctx, release_id, {SERVER_ACTIONS_ENV: key})
    return ControllerBuild(built, ctx.paths.release_dir(release_id))


def drop_older(ctx: Context, keep: str, reason: str = "shipped; the controller keeps only its newest build"
               ) -> tuple[list[str], threading.Thread | None]:
    """Move the controller's older releases (the hosts hold their own) into ``<build dir>/work/trash``: only
    ``keep`` and the newest ``KEEP_ON_CONTROLLER - 1`` others stay. Renames only: the trash (with what an
    earlier run left there) is deleted in the background, beside the rollout, as a local deploy's trash
    is; the thread doing it is returned (None when the trash is empty)."""
    releases = sorted((path.name for path in ctx.paths.releases_dir.iterdir()
                       if path.is_dir() and is_release_id(path.name) and path.name != keep), reverse=True)
    dropped = releases[KEEP_ON_CONTROLLER - 1:]
    for name in dropped:
        ctx.executor.apply_all([MakeDirs(ctx.paths.trash_dir), Rename(ctx.paths.release_dir(name),
                                                                      ctx.paths.trash_dir / name)])
        ctx.log.append("removed", name, reason=reason)
    return dropped, sweep_trash(ctx)


def clear_leftovers(ctx: Context) -> list[str]:
    """What an interrupted build here left (the caller holds the build lock, so no build is running): its
    build dirs, and releases never finished (marked unfinished). Returns their names."""
    paths = ctx.paths
    found = sorted(paths.builds_dir.glob("*"))
    found += [path for path in sorted(paths.releases_dir.glob("*"))
              if path.is_dir() and (path / UNFINISHED_MARKER).exists()]
    for path in found:
        ctx.executor.apply(Remove(path))
        if path.parent == paths.releases_dir:
            ctx.log.append("removed", path.name, reason="unfinished (interrupted build)")
    return [path.name for path in found]
