"""Talking to PM2: run its commands through the executor and read its process list.

PM2 commands run with a minimal environment (PATH, HOME, USER, LANG, PM2_HOME): ``pm2 save``
stores the whole environment of the shell that started the daemon, and we do not want a deployer's
shell secrets in PM2's dump file. The app's env comes only from the generated ecosystem file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.errors import HostPathError, Pm2Error
from nextdeploy.host.executor import Executor, RunResult
from nextdeploy.host.procs import (
    parent_pid,
    pid_exists,
    process_age,
    process_cwd,
    process_executable,
    processes_under,
)
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans.ops import Run
from nextdeploy.pm2 import rpc as pm2rpc

PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR")


@dataclass(frozen=True)
class Worker:
    """One PM2 process of the app."""

    pm_id: int
    pid: int
    status: str
    restarts: int
    memory: int
    cwd: str | None  # the real working directory, from /proc/<pid>/cwd
    age: float | None = None  # seconds since the process started, from /proc/<pid>/stat
    exit_code: int | None = None  # of its last exit, if PM2 saw one

    def release_in(self, releases_dir: Path) -> str | None:
        """The release this worker runs from (its cwd is inside ``releases/<id>/``)."""
        if not self.cwd:
            return None
        try:
            relative = Path(self.cwd).relative_to(releases_dir.resolve())
        except ValueError:
            return None
        return relative.parts[0] if relative.parts else None


class Pm2:
    def __init__(self, binary: str, home: Path | None, executor: Executor) -> None:
        self.binary = binary
        self.home = home
        self.executor = executor
        self._pinged = False

    @property
    def env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        home = self.home or Path(os.environ.get("PM2_HOME") or Path.home() / ".pm2")
        env["PM2_HOME"] = str(home)
        # No daily version check over the network from the daemon (nothing leaves the host).
        env["PM2_DISABLE_VERSION_CHECK"] = "1"
        return env

    def run(self, argv: tuple[str, ...], timeout: float | None = 300) -> RunResult:
        self._skip_first_run_banner()
        return self.executor.apply(Run(argv, env=self.env, timeout=timeout, clean_env=True))

    def _skip_first_run_banner(self) -> None:
        """PM2's first run in a new PM2_HOME prints a banner and checks its version online,
        unless ``<PM2_HOME>/touch`` exists."""
        home = self.home_dir
        try:
            home.mkdir(parents=True, exist_ok=True)
            (home / "touch").touch(exist_ok=True)
        except OSError:
            pass  # pm2 itself will report an unusable PM2_HOME

    def check(self, argv: tuple[str, ...], what: str, timeout: float | None = 300) -> RunResult:
        result = self.run(argv, timeout)
        if not result.ok:
            raise Pm2Error(f"pm2 could not {what}: {_telling_line(result)}",
                           hint=f"see `pm2 logs` (PM2_HOME={self.env['PM2_HOME']})")
        return result

    def save(self, required: bool = True, leaving: frozenset[int] = frozenset()) -> None:
        """Store the process list for `pm2 resurrect` (reboots, `pm2 startup`).

        From the daemon's socket we write the dump ourselves, as `pm2 save` would (``plans.pm2.dump_content``):
        the CLI costs a node start (0.3-0.5 s of CPU) in the middle of an activation. Without the socket, or
        with a dump file that is a symlink (someone keeps it elsewhere), `pm2 save` does it. ``required``:
        raise Pm2Error when that fails. ``leaving``: ids of workers being deleted, left out of the dump.
        """
        home = self.home_dir
        dump, backup = home / "dump.pm2", home / "dump.pm2.bak"
        if not dump.is_symlink() and not backup.is_symlink():
            try:
                processes = pm2rpc.process_list(home)
                previous = dump.read_text(encoding="utf-8") if dump.exists() else None
            except (pm2rpc.RpcUnavailable, OSError, UnicodeDecodeError):
                pass
            else:
                try:
                    self.executor.apply_all(pm2_plan.save_ops(home, processes, previous, leaving))
                    return
                except (OSError, HostPathError):
                    pass  # PM2's own save says what is wrong (or manages where we could not)
        if required:
            self.check(pm2_plan.save_argv(self.binary), "save its process list (for reboots)")
        else:
            self.run(pm2_plan.save_argv(self.binary))

    def ensure_home(self) -> None:
        """Create PM2_HOME if needed; raise HostPathError unless it is a directory this user can write.
        PM2 itself would fail only later (after the build), with a stack trace."""
        home = self.home_dir
        if home.exists() and not home.is_dir():
            raise HostPathError(f"PM2_HOME {home} is not a directory",
                                hint="point [pm2] home (or $PM2_HOME) at a directory, or move that file away")
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HostPathError(f"cannot create PM2_HOME {home}: {exc.strerror}",
                                hint="create it for this user, or set [pm2] home to a writable path") from None
        if not os.access(home, os.W_OK | os.X_OK):
            raise HostPathError(f"PM2_HOME {home} is not writable by this user",
                                hint="fix its owner (chown), or set [pm2] home to a directory of this user")

    @property
    def home_dir(self) -> Path:
        return Path(self.env["PM2_HOME"])

    def daemon_pid(self) -> int | None:
        """The pid of this PM2_HOME's daemon, if one is running."""
        try:
            pid = int((self.home_dir / "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_exists(pid) else None

    def daemon_node(self) -> str | None:
        """The Node binary this PM2_HOME's daemon runs, if one is running: in cluster mode every worker is
        forked with it (the daemon's ``process.execPath``), whatever ``node`` is on PATH now. A binary
        replaced in place since (``apt upgrade``) is the new file at the same path, as fork will run it."""
        pid = self.daemon_pid()
        if pid is None:
            return None
        return process_executable(pid)

    def processes(self) -> list[dict[str, Any]]:
        """PM2's process list: from the daemon's socket (2 ms), else ``pm2 jlist`` (0.25 s, starts a daemon).

        ``pm2 ping`` before the first CLI listing: a daemon spawning prints lines before the JSON.
        """
        try:
            return pm2rpc.process_list(self.home_dir)
        except pm2rpc.RpcUnavailable:
            pass
        if not self._pinged:  # each pm2 call spawns node: ping once, not before every listing
            self.check(pm2_plan.ping_argv(self.binary), "start its daemon", timeout=60)
            self._pinged = True
        result = self.check(pm2_plan.jlist_argv(self.binary), "list processes", timeout=60)
        return parse_jlist(result.stdout)

    def lost_workers(self, releases_dir: Path) -> list[int]:
        """Processes the daemon forked from a release in ``releases_dir`` that are not in its list any more.

        `pm2 delete` (or stop) while PM2 restarts a crash-looping worker can leave the restarted one
        running outside the list, and it still takes connections through the daemon's cluster port
        (seen with PM2 7.0.4): `pm2 ls` shows nothing, yet the port answers from that release."""
        daemon = self.daemon_pid()
        if daemon is None:
            return []
        children = [pid for pid in processes_under(releases_dir) if parent_pid(pid) == daemon]
        if not children:
            return []  # nothing runs from a release: no need to ask the daemon
        listed = {int(entry["pid"]) for entry in self.processes() if entry.get("pid")}
        return [pid for pid in children if pid not in listed]

    def workers(self, name: str) -> list[Worker]:
        """The app's processes; a worker on its way out (a reload's outgoing one, one PM2 is stopping) is not
        one of them any more."""
        return [worker_of(entry) for entry in self.processes()
                if entry.get("name") == name and not pm2_plan.is_outgoing_worker(entry) and not _stopping(entry)]

    def leaving_workers(self, name: str) -> list[Worker]:
        """The app's workers PM2 is stopping: e.g. the old ones of a held cut-over, draining."""
        return [worker_of(entry) for entry in self.processes()
                if entry.get("name") == name and not pm2_plan.is_outgoing_worker(entry) and _stopping(entry)]


def _stopping(entry: dict[str, Any]) -> bool:
    return (entry.get("pm2_env") or {}).get("status") == "stopping"


def parse_jlist(output: str) -> list[dict[str, Any]]:
    """The JSON array in ``pm2 jlist`` output, skipping any lines PM2 printed before it."""
    for index, line in enumerate(output.splitlines()):
        if line.lstrip().startswith("["):
            try:
                data = json.loads("\n".join(output.splitlines()[index:]))
            except json.JSONDecodeError:
                continue
            if isinstance(data, list):
                return [entry for entry in data if isinstance(entry, dict)]
    raise Pm2Error("pm2 jlist printed no process list", hint="check that pm2 works: pm2 ping")


def worker_of(entry: dict[str, Any]) -> Worker:
    pm2_env = entry.get("pm2_env") or {}
    pid = int(entry.get("pid") or 0)
    return Worker(
        pm_id=int(entry.get("pm_id", -1)),
        pid=pid,
        status=str(pm2_env.get("status", "unknown")),
        restarts=int(pm2_env.get("restart_time", 0) or 0),
        memory=int((entry.get("monit") or {}).get("memory", 0) or 0),
        cwd=process_cwd(pid),
        age=process_age(pid),
        exit_code=pm2_env["exit_code"] if isinstance(pm2_env.get("exit_code"), int) else None,
    )


def startup_configured() -> bool:
    """Whether ``pm2 startup`` installed a boot service for PM2 (systemd, the common case)."""
    units = Path("/etc/systemd/system")
    return units.is_dir() and any(units.glob("pm2-*.service"))


def _telling_line(result: RunResult) -> str:
    """The line of a failed pm2 command that says why: its last error line, else its last line. A crash of
    the pm2 CLI ends with a stack trace and "Node.js v20...", which say nothing."""
    lines = [line.strip() for line in (result.stderr.strip() or result.stdout.strip()).splitlines()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    if errors:
        return errors[-1]
    lines = [line for line in lines if line and not line.startswith(("at ", "Node.js v"))]
    return lines[-1] if lines else f"exit code {result.returncode}"


_ERROR_LINE = re.compile(r"^(\[PM2\]\[ERROR\]|\w*Error\b:?)")
