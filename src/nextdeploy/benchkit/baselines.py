"""The two baselines the bench compares nextdeploy against, run as ``python -m nextdeploy.benchkit.baselines``.

``seed``: the seed blog post's bash script (switch ``current``, ``pm2 reload``, ``pm2 save``, then poll
health 30 x 2 s and roll back to the newest other release by mtime), step by step in Python, bugs
included: the rollback fires when the loop reached its last try even if that try succeeded, the
rollback target is picked by mtime (possibly an earlier failed release), cleanup keeps the 5 newest
by mtime (possibly moving the live release away).

``pm2-restart``: switch ``current``, ``pm2 restart``; no health check, no rollback.

Both reuse nextdeploy's build and assembly (``build_release``), so only activation differs from
nextdeploy. Deviations from the script, each needed to run it here: no ``git fetch/reset`` (the source
is a directory), no ``pnpm install --prod`` in the release (the standalone tree already holds what the
server needs, 40 MB instead of 342 MB), no ``NODE_OPTIONS=--preserve-symlinks`` (fatal with pnpm's
standalone layout), ``HOSTNAME=127.0.0.1`` instead of ``0.0.0.0`` (loopback only), each health probe
times out after 5 s (``curl -s`` has no timeout and would hang forever on a release that never answers),
old releases move to ``<root>/../seed-trash`` instead of ``/tmp/project-name``, and PM2 runs
``node --require release_tag.cjs`` so responses say which release answered (measurement only).
Progress goes to stderr in nextdeploy's plain format so the bench times both the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nextdeploy.core.config import Config, load_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import NextdeployError, ReleaseNotFoundError
from nextdeploy.core.ids import new_release_id
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor, RunResult
from nextdeploy.host.probe import ProbeResult, http_get
from nextdeploy.host.tools import require_tool
from nextdeploy.plans.ops import Run
from nextdeploy.pm2.client import parse_jlist
from nextdeploy.release.builder import build_release, prepare_root

RELEASE_TAG_SOURCE = Path(__file__).parent / "release_tag.cjs"

# The seed script's constants.
MAX_RETRIES = 30
RETRY_INTERVAL = 2.0
KEEP_RELEASES = 5
PROBE_TIMEOUT = 5.0  # deviation: curl -s has none
KILL_TIMEOUT_MS = "5000"
MAX_MEMORY = "768M"


# Pure parts (unit-tested) ---------------------------------------------------------------------------

def seed_health_loop(probe: Callable[[], bool], sleep: Callable[[float], None],
                     max_retries: int = MAX_RETRIES, interval: float = RETRY_INTERVAL) -> tuple[bool, int]:
    """The script's health loop: ``(roll back?, tries)``.

    Faithful to its bug: ``if [ $i -eq $MAX_RETRIES ]`` rolls back whenever the loop got to its last try,
    even when that last try succeeded."""
    tries = 0
    for attempt in range(1, max_retries + 1):
        tries = attempt
        if probe():
            break
        sleep(interval)
    return tries == max_retries, tries


def newest_other_by_mtime(releases_dir: Path, exclude: str) -> str | None:
    """``ls -1t releases | grep -v <new> | head -1``: the rollback target, by directory mtime."""
    names = [path for path in releases_dir.iterdir() if exclude not in path.name]
    if not names:
        return None
    return max(names, key=lambda path: path.stat().st_mtime).name


def older_than_newest_by_mtime(releases_dir: Path, keep: int = KEEP_RELEASES) -> list[str]:
    """``ls -1tr | head -n -5``: what the script's cleanup moves away (by mtime, live release or not)."""
    ordered = sorted(releases_dir.iterdir(), key=lambda path: path.stat().st_mtime)
    return [path.name for path in ordered[: max(0, len(ordered) - keep)]]


def seed_health_ok(result: ProbeResult) -> bool:
    """``echo "$response" | grep -q '"status":"ok"'``."""
    return '"status":"ok"' in result.body


# PM2, as the script calls it ------------------------------------------------------------------------

class PlainPm2:
    """pm2 on plain ``current/server.js``, cluster mode, with the script's flags."""

    def __init__(self, config: Config, reporter: Reporter) -> None:
        self.config = config
        self.reporter = reporter
        self.binary = require_tool("pm2", config.root / "tools", config.pm2.bin, install=True)
        self.home = config.pm2_home or Path.home() / ".pm2"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "touch").touch(exist_ok=True)
        self.current = config.root / "current"
        self.tag = config.root / "release_tag.cjs"
        self.executor = LocalExecutor()

    @property
    def name(self) -> str:
        return self.config.app.name

    def env(self) -> dict[str, str]:
        # The script: PORT=$PORT HOSTNAME=$HOSTNAME NODE_OPTIONS="--preserve-symlinks" pm2 ...
        env = {key: os.environ[key] for key in ("PATH", "HOME", "USER", "LANG") if key in os.environ}
        env.update(PM2_HOME=str(self.home), PM2_DISABLE_VERSION_CHECK="1", PORT=str(self.config.server.port),
                   HOSTNAME="127.0.0.1", NEXT_TELEMETRY_DISABLED="1")
        return env

    def run(self, *args: str) -> RunResult:
        return self.executor.apply(Run((self.binary, *args), env=self.env(), timeout=300, clean_env=True))

    def is_listed(self) -> bool:
        # The script: pm2 list | grep -q "project-name"
        self.run("ping")
        try:
            return any(entry.get("name") == self.name for entry in parse_jlist(self.run("jlist").stdout))
        except NextdeployError:
            return False

    def start(self) -> RunResult:
        shutil.copyfile(RELEASE_TAG_SOURCE, self.tag)
        return self.run(
            "start", str(self.current / "server.js"), "--name", self.name, "-i", str(self.config.server.instances),
            "--time", "--max-memory-restart", MAX_MEMORY, "--kill-timeout", KILL_TIMEOUT_MS,
            "--env", "NODE_ENV=production", "--cwd", str(self.current), "--node-args", f"--require {self.tag}",
        )

    def reload(self, update_env: bool = True) -> RunResult:
        if not update_env:  # the script's rollback reload has no flags
            return self.run("reload", self.name)
        return self.run("reload", self.name, "--update-env", "--max-memory-restart", MAX_MEMORY,
                        "--kill-timeout", KILL_TIMEOUT_MS, "--restart-delay=5000")

    def restart(self) -> RunResult:
        return self.run("restart", self.name, "--update-env")

    def save(self) -> RunResult:
        return self.run("save")


# The procedures -------------------------------------------------------------------------------------

def switch_current(root: Path, release_dir: Path) -> None:
    """``ln -sfn <release> current.new && mv -T current.new current`` (an absolute target, as the script)."""
    temporary = root / "current.new"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(release_dir)
    os.replace(temporary, root / "current")


def seed_deploy(ctx: Context, reporter: Reporter) -> int:
    """The seed script after its build; exit code 1 when it rolled back."""
    config, paths = ctx.config, ctx.paths
    pm2 = PlainPm2(config, reporter)
    release_id = new_release_id()
    reporter.info(f"release {release_id}")
    build_release(ctx, release_id)
    release_dir = paths.release_dir(release_id)
    with reporter.step(f"switch current -> {release_id}", StepName.SWITCH):
        switch_current(paths.root, release_dir)
    if not pm2.is_listed():
        with reporter.step("pm2 start server.js -i 2 (first start)", StepName.START):
            pm2.start()
    else:
        with reporter.step("pm2 reload --update-env --kill-timeout 5000", StepName.RELOAD):
            pm2.reload()
    with reporter.step("pm2 save", StepName.SAVE):
        pm2.save()

    port = config.server.port
    with reporter.step(f"health check: up to {MAX_RETRIES} tries, {RETRY_INTERVAL:g} s apart", StepName.VERIFY):
        roll_back, tries = seed_health_loop(
            lambda: seed_health_ok(http_get("127.0.0.1", port, "/api/health", PROBE_TIMEOUT)), time.sleep)
    reporter.info(f"health check: {tries} tr{'y' if tries == 1 else 'ies'}")
    if roll_back:
        previous = newest_other_by_mtime(paths.releases_dir, release_id)
        if previous is None:
            reporter.info("no release to roll back to")
            return 1
        with reporter.step(f"roll back to {previous} (newest other release by mtime)", StepName.ROLLBACK):
            switch_current(paths.root, paths.release_dir(previous))
            pm2.reload(update_env=False)
        reporter.info(f"rolled back to {previous}")
        return 1
    with reporter.step(f"move old releases away (keep {KEEP_RELEASES} newest by mtime)", StepName.RETAIN):
        trash = trash_dir(paths.root)
        trash.mkdir(exist_ok=True)
        for name in older_than_newest_by_mtime(paths.releases_dir):
            os.replace(paths.release_dir(name), trash / f"{name}-{int(time.time())}")
    return 0


def pm2_restart_deploy(ctx: Context, reporter: Reporter) -> int:
    """Switch and ``pm2 restart``: what many guides do. No gate, no rollback."""
    paths = ctx.paths
    pm2 = PlainPm2(ctx.config, reporter)
    release_id = new_release_id()
    reporter.info(f"release {release_id}")
    build_release(ctx, release_id)
    with reporter.step(f"switch current -> {release_id}", StepName.SWITCH):
        switch_current(paths.root, paths.release_dir(release_id))
    if not pm2.is_listed():
        with reporter.step("pm2 start server.js -i 2 (first start)", StepName.START):
            pm2.start()
    else:
        with reporter.step("pm2 restart --update-env", StepName.RESTART):
            pm2.restart()
    with reporter.step("pm2 save", StepName.SAVE):
        pm2.save()
    return 0


def trash_dir(root: Path) -> Path:
    """Where the script's cleanup moves old releases (``/tmp/project-name`` in the script)."""
    return root.parent / "seed-trash"


def restore(ctx: Context, reporter: Reporter, release_id: str) -> int:
    """Put ``release_id`` back with a fresh start (the bench's repair after a baseline broke the site),
    fetching it back from the trash if the script's cleanup moved it there."""
    pm2 = PlainPm2(ctx.config, reporter)
    release_dir = ctx.paths.release_dir(release_id)
    with reporter.step(f"restore {release_id}", StepName.RESTORE):
        if not release_dir.is_dir():
            moved = sorted(trash_dir(ctx.paths.root).glob(f"{release_id}-*"))
            if not moved:
                raise ReleaseNotFoundError(f"release {release_id} is gone (not in releases/ nor in the trash)")
            os.replace(moved[-1], release_dir)
        switch_current(ctx.paths.root, release_dir)
        pm2.run("delete", pm2.name)
        pm2.start()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m nextdeploy.benchkit.baselines {seed,pm2-restart,restore} -c CONFIG [--release ID]``."""
    parser = argparse.ArgumentParser(prog="nextdeploy.benchkit.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("strategy", choices=("seed", "pm2-restart", "restore"))
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--release", help="for restore: the release to put back")
    args = parser.parse_args(argv)
    reporter = Reporter(json_mode=True)  # progress on stderr, in the plain format the bench parses
    try:
        ctx = Context(load_config(args.config), LocalExecutor(), reporter)
        prepare_root(ctx)
        if args.strategy == "seed":
            return seed_deploy(ctx, reporter)
        if args.strategy == "pm2-restart":
            return pm2_restart_deploy(ctx, reporter)
        if not args.release:
            parser.error("restore needs --release")
        return restore(ctx, reporter, args.release)
    except NextdeployError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
