"""A deploy target for the bench and the demo: an example-app source, a config, a deploy root, a PM2_HOME.

Everything lives under one directory. ``close()`` stops the PM2 daemon of that PM2_HOME and kills any
process still running from inside the directory, so an interrupted bench leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.demo.exampleapp import copy_example, set_version
from nextdeploy.host.probe import ProbeResult, http_get, listen_port
from nextdeploy.host.procs import live_processes, parent_pid, process_cwd
from nextdeploy.host.tools import find_tool
from nextdeploy.pm2.client import parse_jlist

REPO = Path(__file__).resolve().parents[3]
# A development checkout keeps pnpm and pm2 here; an installed nextdeploy finds them on PATH.
DEV_TOOLS_BIN = REPO / ".tools" / "node_modules" / ".bin"
APP_NAME = "hello"
HEALTH_PATH = "/api/health"


def tool_env(pm2_home: Path | None = None) -> dict[str, str]:
    """The environment for deploy commands and pm2: dev tools on PATH, no colors, no PM2 version check."""
    env = dict(os.environ)
    if DEV_TOOLS_BIN.is_dir():
        env["PATH"] = f"{DEV_TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("HOSTNAME", None)  # Next binds to $HOSTNAME; never inherit the machine's name
    env["NO_COLOR"] = "1"
    env["PM2_DISABLE_VERSION_CHECK"] = "1"
    env["NEXT_TELEMETRY_DISABLED"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if pm2_home is not None:
        env["PM2_HOME"] = str(pm2_home)
    return env


def pm2_binary(tools_dir: Path | None = None) -> str | None:
    """pm2 on PATH, else in the dev tools, else in ``tools_dir`` (a deploy root's tools/, where a deploy
    installs pm2 with npm when PATH has none), if any."""
    return find_tool("pm2", DEV_TOOLS_BIN.parents[1] if DEV_TOOLS_BIN.is_dir() else tools_dir)


@dataclass
class Target:
    """One isolated site: ``base/{app,root,pm2}`` plus ``base/nextdeploy.toml``."""

    base: Path
    port: int = field(default_factory=listen_port)
    instances: int = 2
    health_timeout: float = 15.0
    smoke: tuple[str, ...] = ("/",)
    reload_at_once: int | None = None

    def __post_init__(self) -> None:
        self.base = self.base.resolve()
        self.app_dir = self.base / "app"
        self.root = self.base / "root"
        self.pm2_home = self.base / "pm2"
        self.config_path = self.base / "nextdeploy.toml"
        self.base.mkdir(parents=True, exist_ok=True)
        self.pm2_home.mkdir(parents=True, exist_ok=True)
        # Without this file PM2's first run prints a banner and checks its version online.
        (self.pm2_home / "touch").write_text("0")
        if not (self.app_dir / "package.json").is_file():
            copy_example(self.app_dir, "v1")
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def config_text(self) -> str:
        """The nextdeploy.toml of this target (also read by the baseline strategies)."""
        smoke = ", ".join(json.dumps(path) for path in self.smoke)
        return (
            "# Written by nextdeploy's bench/demo.\n"
            "[app]\n"
            f'name = "{APP_NAME}"\n'
            f"source = {json.dumps(str(self.app_dir))}\n\n"
            "[server]\n"
            f"root = {json.dumps(str(self.root))}\n"
            f"port = {self.port}\n"
            f"instances = {self.instances}\n"
            + (f"reload_at_once = {self.reload_at_once}\n" if self.reload_at_once else "")
            + "\n"
            "[pm2]\n"
            f"home = {json.dumps(str(self.pm2_home))}\n\n"
            "[health]\n"
            f'path = "{HEALTH_PATH}"\n'
            "expect_body = '\"status\":\"ok\"'\n"
            "# Above 10 s: the slow-start release is a good one and must go live.\n"
            f"timeout = {self.health_timeout:g}\n"
            f"smoke = [{smoke}]\n\n"
            "[releases]\n"
            "keep = 5\n"
        )

    # Acting ---------------------------------------------------------------------------------------

    def set_version(self, version: str, variant: str = "good") -> None:
        set_version(self.app_dir, version, variant)

    @property
    def env(self) -> dict[str, str]:
        return tool_env(self.pm2_home)

    def pm2(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        binary = pm2_binary(self.root / "tools") or "pm2"
        return subprocess.run([binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def workers(self) -> list[dict[str, Any]]:
        """PM2's process list for this target (empty if the daemon is not running)."""
        if not (self.pm2_home / "pm2.pid").exists():
            return []
        result = self.pm2("jlist")
        try:
            return parse_jlist(result.stdout)
        except Exception:
            return []

    def worker_releases(self) -> list[tuple[int, str | None]]:
        """(pid, release id) of each worker, from ``/proc/<pid>/cwd``."""
        pairs: list[tuple[int, str | None]] = []
        releases = (self.root / "releases").resolve()
        for entry in self.workers():
            pid = int(entry.get("pid") or 0)
            cwd = process_cwd(pid)
            release = None
            if cwd and cwd.startswith(str(releases) + "/"):
                release = Path(cwd).relative_to(releases).parts[0]
            pairs.append((pid, release))
        return pairs

    # Looking --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def probe(self, path: str = HEALTH_PATH, timeout: float = 5.0) -> ProbeResult:
        return http_get("127.0.0.1", self.port, path, timeout)

    def current(self) -> str | None:
        link = self.root / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def wait_healthy(self, timeout: float = 60.0) -> ProbeResult:
        """Poll the health route until it answers 200 (or ``timeout``); returns the last probe."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.probe()
            if result.status == 200 or time.monotonic() >= deadline:
                return result
            time.sleep(0.25)

    # Tear-down ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop this target's PM2 daemon and anything still running from inside ``base``."""
        if (self.pm2_home / "pm2.pid").exists() or (self.pm2_home / "rpc.sock").exists():
            try:
                self.pm2("kill", timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
        kill_processes_under(self.base)


def kill_processes_under(base: Path) -> list[int]:
    """SIGKILL every process whose cwd or command line is inside ``base``; returns their pids."""
    # Never our own process or its parents (a shell whose command line names ``base``).
    spared = _ancestors(os.getpid())
    killed: list[int] = []
    for pid, cwd, cmdline in live_processes():
        if pid in spared:
            continue
        if cwd == str(base) or cwd.startswith(str(base) + "/") or str(base) + "/" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    if killed:
        time.sleep(0.2)
    return killed


def _ancestors(pid: int) -> set[int]:
    chain = {pid}
    while pid > 1 and (parent := parent_pid(pid)) is not None:
        pid = parent
        chain.add(pid)
    return chain


def python_argv(*args: str) -> list[str]:
    """``python -m ...`` with the interpreter running the bench (its venv has nextdeploy)."""
    return [sys.executable, "-m", *args]
