"""The fake PM2's daemon and workers: its process list, what PM2 and the launcher do with it, on a fake clock."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.core.config import Config
from nextdeploy.core.manifest import is_approved, layout_of
from nextdeploy.core.paths import DeployPaths, ReleaseLayout
from nextdeploy.host.executor import RunResult
from nextdeploy.pm2.client import Worker

STOP_QUICK = 0.05  # a worker that serves nothing (held, booting) stops this long after SIGINT
DRAIN = 0.5  # a serving worker drains this long after its deletion


class Killed(BaseException):
    """The run was killed (SIGKILL): nothing of it runs on, no ``except`` or ``finally`` of it counts."""


@dataclass(frozen=True)
class Behaviour:
    """What a release's workers do; each time is counted from the worker's (re)start."""

    boot: float = 0.6  # until it answers its health path (then held, or serving)
    answers: bool = True  # False: never answers (PM2 calls it online at listen_timeout all the same)
    status: int = 200  # what its health path answers
    dies_after: float | None = None  # it exits then (with ``exit_code``)
    dies_once: bool = False  # only its first run dies (the one PM2 restarts runs on)
    exit_code: int = 1
    restart_boot: float | None = None  # a restarted worker's boot, if not ``boot``
    unhealthy_after: float | None = None  # its health path answers 500 from then
    hangs_after: float | None = None  # no answer from then (a blocked event loop)
    opens_public: bool = True  # False: it exits when it should open the public port (EADDRINUSE)


class FakeClock:
    """Monotonic time that only moves when slept. ``on_tick`` runs after each move."""

    def __init__(self, start: float = 1000.0, limit: float = 600.0) -> None:
        self.now = self.start = start
        self.limit = start + limit  # a run still sleeping then never ends: fail the test instead of hanging
        self.on_tick: list[Callable[[], None]] = []
        self._raise_at: list[tuple[Callable[[], bool], BaseException]] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        if self.now > self.limit:
            raise AssertionError(f"still sleeping after {self.now - self.start:g} s of fake time")
        for tick in self.on_tick:
            tick()
        self.check()

    def check(self) -> None:
        """Raise what is due (see ``raise_when``): after a sleep, and before each op the executor carries out."""
        for index, (due, exc) in enumerate(self._raise_at):
            if due():
                del self._raise_at[index]
                raise exc

    def raise_when(self, due: Callable[[], bool], exc: BaseException) -> None:
        """Raise ``exc`` at the first ``check`` at which ``due()`` holds: a signal, or a SIGKILL (``Killed``)."""
        self._raise_at.append((due, exc))

    def raise_at(self, when: float, exc: BaseException) -> None:
        self.raise_when(lambda: self.now >= when, exc)


@dataclass
class FakeProcess:
    """One entry of PM2's list."""

    pm_id: int
    name: str
    pid: int
    release: str | None  # what `current` pointed at when it was forked
    started: float
    env: dict[str, str] = field(default_factory=dict)
    status: str = "launching"
    restarts: int = 0
    exit_code: int | None = None
    port: int | None = None  # its private port, once it answers
    held: bool = False
    serving: bool = False  # takes connections on the public port
    stop_at: float | None = None
    first_run: bool = True
    fork_again: bool = False  # deleted before its 'ready' (see ``FakeDaemon.fork_unready_again``)
    forked_again: bool = False


class FakeDaemon:
    """PM2's daemon and the app's workers (the launcher's part included)."""

    def __init__(self, clock: FakeClock, paths: DeployPaths, config: Config) -> None:
        self.clock = clock
        self.paths = paths
        self.config = config
        self.behaviours: dict[str, Behaviour] = {}
        self.processes: list[FakeProcess] = []
        self.max_restarts = 15
        # PM2 7 forks a worker again, under the same id, when it is deleted before it said 'ready' (a booting
        # or crash-looping one; a held worker said 'ready'): once here, from `current`.
        self.fork_unready_again = True
        self.saves = 0
        self.history: list[str] = []  # what PM2 was asked to do and what the workers did, with the time
        self._ids = itertools.count()
        self._pids = itertools.count(40000)
        self._ports = itertools.count(50000)
        self._turn = itertools.count()
        clock.on_tick.append(self.advance)

    # Queries -------------------------------------------------------------------------------------------

    def behaviour(self, release: str | None) -> Behaviour:
        return self.behaviours.get(release or "", Behaviour())

    def find(self, pm_id: int) -> FakeProcess | None:
        return next((p for p in self.processes if p.pm_id == pm_id), None)

    def releases_serving(self) -> list[str | None]:
        """The release of each worker that takes connections on the public port, by PM2 id."""
        return [p.release for p in sorted(self.processes, key=lambda p: p.pm_id) if p.serving]

    def listening_on(self, port: int) -> FakeProcess | None:
        """Who takes a connection to ``port``: on the public port each serving worker in turn (PM2's cluster
        round-robin), on a private one the worker that listens there."""
        if port == self.config.server.port:
            serving = [p for p in sorted(self.processes, key=lambda p: p.pm_id) if p.serving]
            return serving[next(self._turn) % len(serving)] if serving else None
        return next((p for p in self.processes if p.port == port and p.status == "online"), None)

    def worker(self, process: FakeProcess) -> Worker:
        cwd = str(self.paths.release_dir(process.release).resolve()) if process.release and process.pid else None
        return Worker(process.pm_id, process.pid, process.status, process.restarts, 0, cwd,
                      age=self.clock.now - process.started if process.pid else None, exit_code=process.exit_code)

    def entry(self, process: FakeProcess) -> dict[str, Any]:
        """As in ``pm2 jlist``."""
        return {"name": process.name, "pm_id": process.pm_id, "pid": process.pid,
                "pm2_env": {"status": process.status, "restart_time": process.restarts, "exit_code": process.exit_code,
                            "pm_uptime": int(process.started * 1000), "env": dict(process.env)}}

    # What PM2 is asked to do ---------------------------------------------------------------------------

    def _note(self, what: str) -> None:
        self.history.append(f"{self.clock.now:.2f} {what}")

    def _current(self) -> str | None:
        link = self.paths.current_link
        return Path(str(link.readlink())).name if link.is_symlink() else None

    def _fork(self, process: FakeProcess) -> None:
        process.pid, process.release, process.started = next(self._pids), self._current(), self.clock.now
        process.status, process.port, process.stop_at = "launching", None, None
        process.held = process.serving = False

    def start(self, instances: int, env: dict[str, str] | None = None) -> None:
        for _ in range(instances):
            process = FakeProcess(next(self._ids), self.config.app.name, 0, None, self.clock.now, dict(env or {}))
            self._fork(process)
            self.processes.append(process)
            self._note(f"start {process.pm_id} (pid {process.pid}, {process.release})")

    def duplicate(self, pm_id: int) -> None:
        model = self.find(pm_id)
        if model is None:
            raise LookupError(f"no PM2 process {pm_id}")
        # A duplicate keeps its model's env, options and restart count.
        process = FakeProcess(next(self._ids), model.name, 0, None, self.clock.now, dict(model.env),
                              restarts=model.restarts)
        self._fork(process)
        self.processes.append(process)
        self._note(f"duplicate {pm_id} -> {process.pm_id} (pid {process.pid}, {process.release})")

    def delete(self, pm_id: int) -> None:
        process = self.find(pm_id)
        if process is None or process.status == "stopping":
            return
        self._note(f"delete {pm_id} (pid {process.pid}, {process.release})")
        if not process.pid:
            self.processes.remove(process)
            return
        process.fork_again = self.fork_unready_again and process.status == "launching" and not process.forked_again
        # The launcher closes the public listener at once and drains what it serves.
        process.stop_at = self.clock.now + (DRAIN if process.serving else STOP_QUICK)
        process.status, process.serving = "stopping", False

    def reload(self, pm_id: int) -> None:
        """A new worker under the same id, from ``current`` (the old one's drain is not modelled)."""
        process = self.find(pm_id)
        if process is None:
            return
        self._remove_held_file(process)
        process.restarts += 1
        process.first_run = True
        self._fork(process)
        self._note(f"reload {pm_id} (pid {process.pid}, {process.release})")

    def kill(self, pid: int) -> None:
        process = next((p for p in self.processes if p.pid == pid), None)
        if process is not None:
            self._exit(process, None)

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = self.clock.now + timeout
        while not done():
            if self.clock.now >= deadline:
                return False
            self.clock.sleep(0.02)
        return True

    # Time passing ----------------------------------------------------------------------------------------

    def advance(self) -> None:
        now = self.clock.now
        for process in list(self.processes):
            if process.status == "stopping":
                if process.stop_at is not None and now >= process.stop_at:
                    self._stopped(process)
                continue
            if process.status not in ("launching", "online"):
                continue
            behaviour = self.behaviour(process.release)
            age = now - process.started
            if behaviour.dies_after is not None and age >= behaviour.dies_after and (
                    process.first_run or not behaviour.dies_once):
                self._exit(process, behaviour.exit_code)
                continue
            boot = behaviour.boot if process.first_run or behaviour.restart_boot is None else behaviour.restart_boot
            if process.status == "launching" and behaviour.answers and age >= boot:
                self._ready(process)
            elif process.status == "launching" and age >= self.config.server.listen_timeout / 1000:
                process.status = "online"  # PM2's listen_timeout: online, 'ready' or not
            if process.held and self._approved(process.release):
                self._remove_held_file(process)
                process.held = False
                self._open_public(process, "approved: ")

    def _approved(self, release: str | None) -> bool:
        return release is not None and is_approved(self.paths.release_dir(release))

    def _layout(self, release: str) -> ReleaseLayout:
        release_dir = self.paths.release_dir(release)
        return layout_of(release_dir) or ReleaseLayout(release_dir)

    def _ready(self, process: FakeProcess) -> None:
        process.status, process.port = "online", next(self._ports)
        if process.release is not None and not self._approved(process.release):
            # launcher.cjs: held off the public port, its private port in held/<pid>.
            held_dir = self._layout(process.release).held_dir
            held_dir.mkdir(parents=True, exist_ok=True)
            (held_dir / str(process.pid)).write_text(f"{process.port}\n", encoding="utf-8")
            process.held = True
            self._note(f"{process.pm_id} held (pid {process.pid}, {process.release})")
        else:
            self._open_public(process)

    def _open_public(self, process: FakeProcess, why: str = "") -> None:
        if not self.behaviour(process.release).opens_public:
            self._note(f"{process.pm_id} cannot open the public port")
            self._exit(process, 1)
            return
        process.serving = True
        self._note(f"{process.pm_id} {why}serving (pid {process.pid}, {process.release})")

    def _remove_held_file(self, process: FakeProcess) -> None:
        if process.release is not None and process.pid:
            (self._layout(process.release).held_dir / str(process.pid)).unlink(missing_ok=True)

    def _exit(self, process: FakeProcess, code: int | None) -> None:
        self._remove_held_file(process)
        self._note(f"{process.pm_id} exited (pid {process.pid}, code {code})")
        if process.status == "stopping":
            self._stopped(process)
            return
        process.exit_code = code
        if process.restarts >= self.max_restarts:
            process.status, process.pid, process.serving, process.held = "errored", 0, False, False
            return
        process.restarts += 1  # PM2 forks it again, from `current`
        process.first_run = False
        self._fork(process)
        self._note(f"{process.pm_id} restarted by PM2 (pid {process.pid}, {process.release})")

    def _stopped(self, process: FakeProcess) -> None:
        self._remove_held_file(process)
        self._note(f"{process.pm_id} stopped (pid {process.pid})")
        if not process.fork_again:
            self.processes.remove(process)
            return
        process.fork_again, process.forked_again, process.first_run = False, True, False
        self._fork(process)
        self._note(f"{process.pm_id} forked again after its delete (pid {process.pid}, {process.release})")

    # The pm2 CLI ----------------------------------------------------------------------------------------

    def cli(self, args: tuple[str, ...]) -> RunResult:
        name = self.config.app.name
        ours = [p for p in self.processes if p.name == name and p.status != "stopping"]
        command = args[0] if args else ""
        if command in ("ping", "save"):
            self.saves += command == "save"
            return RunResult(0)
        if command == "jlist":
            return RunResult(0, json.dumps([self.entry(p) for p in self.processes]))
        if command == "start":
            if not ours:
                self.start(self.config.server.instances)
            return RunResult(0)
        if command == "reload":  # one worker after the other, each once ready (or at listen_timeout)
            for process in ours:
                self.reload(process.pm_id)
                self.wait_until(_launched(process), self.config.server.listen_timeout / 1000)
            return RunResult(0)
        if command == "delete":
            targets = ours if args[1] == name else [p for p in ours if str(p.pm_id) == args[1]]
            for process in targets:
                self.delete(process.pm_id)
            # It answers once they stopped (one PM2 7 forks again is back in the list, launching).
            self.wait_until(lambda: all(p.status != "stopping" or p not in self.processes for p in targets), 30)
            return RunResult(0)
        return RunResult(1, stderr=f"fake pm2: {' '.join(args)} is not modelled")


def _launched(process: FakeProcess) -> Callable[[], bool]:
    return lambda: process.status != "launching"
