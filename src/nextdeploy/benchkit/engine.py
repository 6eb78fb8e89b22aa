"""The bench engine: deploy strategies, a session per target, and runs of named scenarios under load.

A *run* starts the loads, waits a steady-state window, performs the scenario's actions (deploys,
rollbacks, faults) as subprocesses while recording when every step started and ended, waits a short
tail window and stops the loads. Nothing here computes figures: see ``measure`` and ``report``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nextdeploy.benchkit.commands import CommandRecord, LineHook, run_command
from nextdeploy.benchkit.measure import DiskUsage, disk_usage, step_started
from nextdeploy.benchkit.target import HEALTH_PATH, Target, python_argv
from nextdeploy.core.config import load_config
from nextdeploy.core.steps import StepName
from nextdeploy.demo.loadgen import BackgroundLoad, LoadResult, Mode

DEPLOY_TIMEOUT = 240.0
# After a command, what serves is looked at once health answers 200, or after this many seconds.
OBSERVE_WAIT = 5.0
# Loads stop by themselves after this, whatever happens (each run normally stops them much earlier).
MAX_RUN_SECONDS = 420.0


@dataclass(frozen=True)
class Strategy:
    """How one tool deploys: the command for a deploy, and how to read its steps."""

    key: str
    title: str
    deploy_args: tuple[str, ...]  # ``python -m`` arguments; ``-c <config>`` is appended
    rollback_args: tuple[str, ...] | None
    activation_end: tuple[StepName, ...]  # the steps that end its activation (its own verification)
    reload_step: tuple[StepName, ...]  # the steps of its reload/restart (where a worker gets killed)


NEXTDEPLOY = Strategy(
    key="nextdeploy", title="nextdeploy",
    deploy_args=("nextdeploy", "deploy", "--json"),
    rollback_args=("nextdeploy", "rollback", "--json"),
    activation_end=(StepName.VERIFY,),
    # The held cut-over replaces workers from its window's start: its new workers boot then.
    reload_step=(StepName.RELOAD, StepName.START, StepName.HELD),
)
SEED = Strategy(
    key="seed-script", title="seed script",
    deploy_args=("nextdeploy.benchkit.baselines", "seed"),
    rollback_args=None,
    activation_end=(StepName.VERIFY,),  # its health loop
    reload_step=(StepName.RELOAD, StepName.START),
)
PM2_RESTART = Strategy(
    key="pm2-restart", title="pm2 restart",
    deploy_args=("nextdeploy.benchkit.baselines", "pm2-restart"),
    rollback_args=None,
    activation_end=(StepName.RESTART, StepName.START),
    reload_step=(StepName.RESTART, StepName.START),
)
STRATEGIES = {strategy.key: strategy for strategy in (NEXTDEPLOY, SEED, PM2_RESTART)}


@dataclass(frozen=True)
class LoadSpec:
    """One client population of a run."""

    label: str
    mode: Mode
    rate: float
    path: str = HEALTH_PATH
    connections: int = 16

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "mode": self.mode, "rate": self.rate, "path": self.path,
                "connections": self.connections}


@dataclass
class Mark:
    """An instant on the timeline (``time.monotonic()``) with what happened then."""

    t: float
    label: str


@dataclass
class Action:
    """One deploy or rollback of a run, with what was served afterwards."""

    kind: str  # "deploy" | "rollback"
    label: str
    command: CommandRecord
    previous: str | None  # the release serving before
    release: str | None  # the new release (deploy) or the one rolled back to
    version: str | None = None
    variant: str | None = None
    serving_after: str | None = None
    health_after: int | None = None
    page_after: int | None = None
    disk: DiskUsage | None = None


@dataclass
class Run:
    """One scenario, one strategy, one set of loads."""

    strategy: Strategy
    scenario: str
    rep: int
    loads: dict[str, LoadResult] = field(default_factory=dict)
    specs: list[LoadSpec] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # release id -> "v3 (crash-at-boot)"
    counted_from: float | None = None  # failures before this instant are expected (pm2-killed)
    load_started: float = 0.0
    load_stopped: float = 0.0
    notes: list[str] = field(default_factory=list)
    expect: str = "live"
    stability_window: float | None = None  # the target's [health] stable_for (s)

    @property
    def label(self) -> str:
        modes = "+".join(spec.label for spec in self.specs if spec.label != "page")
        return f"{self.strategy.key}/{self.scenario}#{self.rep}/{modes}"


Echo = Callable[[str], None]


class Session:
    """One strategy on one target: the initial deploy, then runs, with repairs between them."""

    def __init__(self, strategy: Strategy, target: Target, echo: Echo, echo_steps: Echo | None = None) -> None:
        self.strategy = strategy
        self.target = target
        self.echo = echo
        self.echo_steps = echo_steps
        self.version_number = 0
        self.versions: dict[str, str] = {}
        self.good: list[str] = []  # releases that went live as good ones, oldest first

    # Commands -------------------------------------------------------------------------------------

    def argv(self, args: Sequence[str]) -> list[str]:
        return python_argv(*args, "-c", str(self.target.config_path))

    def next_version(self) -> str:
        self.version_number += 1
        return f"v{self.version_number}"

    def serving(self) -> tuple[int | None, str | None, int | None]:
        """(health status, release that answered, status of the page ``/``), from fresh connections."""
        health = self.target.probe()
        page = self.target.probe("/")
        return health.status, health.release, page.status

    def setup(self) -> CommandRecord:
        """The first deploy (v1), without load: every later run starts from a good live release."""
        version = self.next_version()
        self.target.set_version(version)
        record = run_command(self.argv(self.strategy.deploy_args), self.target.env, DEPLOY_TIMEOUT,
                             echo=self.echo_steps)
        if record.release:
            self.versions[record.release] = version
        self.target.wait_healthy(OBSERVE_WAIT)  # `pm2 start` returns before the app listens
        status, release, _ = self.serving()
        if record.exit_code != 0 or status != 200 or release is None:
            raise BenchError(f"{self.strategy.key}: the initial deploy of {version} failed "
                             f"(exit {record.exit_code}): {record.error_line() or 'see its output'}")
        self.good.append(release)
        return record

    def ensure_good(self) -> str | None:
        """Make sure a good release serves before a run; returns a note when a repair was needed."""
        status, release, page = self.serving()
        workers = self.target.worker_releases()
        healthy = (status == 200 and page == 200 and release in self.good
                   and len(workers) == self.target.instances and all(r == release for _, r in workers))
        if healthy:
            return None
        candidates = [rid for rid in reversed(self.good) if self.release_exists(rid)]
        if not candidates:
            raise BenchError(f"{self.strategy.key}: no good release left to restore")
        good = candidates[0]
        before = f"health {status}, page {page}, serving {self.versions.get(release or '', release)}"
        if self.strategy is NEXTDEPLOY:
            # `rollback --to` refuses the live release: pick the newest good one that is not `current`.
            good = next((rid for rid in candidates if rid != self.target.current()), good)
            if good != self.target.current():
                record = run_command(self.argv(("nextdeploy", "rollback", "--to", good)), self.target.env,
                                     DEPLOY_TIMEOUT)
            else:  # only `current` is left: deploy a fresh good version
                version = self.next_version()
                self.target.set_version(version)
                record = run_command(self.argv(self.strategy.deploy_args), self.target.env, DEPLOY_TIMEOUT)
                if record.release:
                    good = record.release
                    self.versions[good] = version
                    self.good.append(good)
        else:
            record = run_command(self.argv(("nextdeploy.benchkit.baselines", "restore", "--release", good)),
                                 self.target.env, DEPLOY_TIMEOUT)
        after = self.target.wait_healthy(60)
        note = (f"repaired before the run ({before}) -> {self.versions.get(good, good)}: "
                f"exit {record.exit_code}, health {after.status}")
        self.echo(f"  {note}")
        if after.status != 200:
            raise BenchError(f"{self.strategy.key}: could not restore a good release: {note}")
        return note

    def release_exists(self, release_id: str) -> bool:
        """On disk, or (for the seed script) moved to its trash by the script's cleanup, from where
        ``baselines restore`` fetches it back."""
        if (self.target.root / "releases" / release_id).is_dir():
            return True
        trash = self.target.root.parent / "seed-trash"
        return self.strategy is SEED and any(trash.glob(f"{release_id}-*"))

    def ensure_earlier_good(self) -> str | None:
        """A rollback needs a good release older than the live one: deploy one more (unmeasured) if not."""
        _, current, _ = self.serving()
        earlier = self.good[: self.good.index(current)] if current in self.good else []
        if any((self.target.root / "releases" / rid).is_dir() for rid in earlier):
            return None
        version = self.next_version()
        self.target.set_version(version)
        record = run_command(self.argv(self.strategy.deploy_args), self.target.env, DEPLOY_TIMEOUT)
        status, release, _ = self.serving()
        if record.exit_code != 0 or status != 200 or release != record.release or release is None:
            raise BenchError(f"{self.strategy.key}: the deploy before the rollback failed: {record.error_line()}")
        self.versions[release] = version
        self.good.append(release)
        return f"deployed {version} first (unmeasured) so that there is a release to roll back from"

    # Runs -----------------------------------------------------------------------------------------

    def run(self, scenario: Scenario, specs: Sequence[LoadSpec], rep: int = 1, pre: float = 4.0,
            post: float = 3.0) -> Run:
        """Run ``scenario`` under ``specs`` loads: steady window, actions, tail window."""
        run = Run(self.strategy, scenario.name, rep, specs=list(specs), expect=scenario.expect,
                  stability_window=load_config(self.target.config_path).health.stable_for)
        repair = self.ensure_good()
        if repair:
            run.notes.append(repair)
        if scenario.needs_earlier_good:
            prepared = self.ensure_earlier_good()
            if prepared:
                run.notes.append(prepared)
        loads = {spec.label: BackgroundLoad(self.target.url + spec.path, rate=spec.rate,
                                            duration=MAX_RUN_SECONDS, mode=spec.mode,
                                            connections=spec.connections, timeout=5.0)
                 for spec in specs}
        context = RunContext(self, run)
        run.load_started = time.monotonic()
        for load in loads.values():
            load.start()
        try:
            time.sleep(pre)
            scenario.body(context)
            time.sleep(post)
        finally:
            for load in loads.values():
                load.stop()
            run.load_stopped = time.monotonic()
            for label, load in loads.items():
                run.loads[label] = load.result()
        run.versions = dict(self.versions)
        return run


class BenchError(Exception):
    """The bench itself could not go on (not a measured failure)."""


class RunContext:
    """What a scenario can do during a run."""

    def __init__(self, session: Session, run: Run) -> None:
        self.session = session
        self.run = run
        self.target = session.target

    def mark(self, label: str) -> None:
        self.run.marks.append(Mark(time.monotonic(), label))

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def deploy(self, variant: str = "good", on_line: LineHook | None = None) -> Action:
        """Deploy the next version as ``variant`` and record what serves afterwards."""
        session = self.session
        version = session.next_version()
        self.target.set_version(version, variant)
        _, previous, _ = session.serving()
        label = f"deploy {version}" + ("" if variant == "good" else f" ({variant})")
        record = run_command(session.argv(session.strategy.deploy_args), self.target.env, DEPLOY_TIMEOUT,
                             on_line=on_line, echo=session.echo_steps)
        release = record.release
        if release:
            session.versions[release] = version + ("" if variant == "good" else f" ({variant})")
        action = Action("deploy", label, record, previous, release, version, variant)
        self._observe(action)
        if variant in ("good", "slow-start") and release and action.serving_after == release \
                and action.page_after == 200:
            session.good.append(release)
        self.run.actions.append(action)
        return action

    def rollback(self) -> Action:
        """The strategy's rollback command (nextdeploy only)."""
        session = self.session
        if session.strategy.rollback_args is None:
            raise BenchError(f"{session.strategy.key} has no rollback command")
        _, previous, _ = session.serving()
        record = run_command(session.argv(session.strategy.rollback_args), self.target.env, DEPLOY_TIMEOUT,
                             echo=session.echo_steps)
        action = Action("rollback", "rollback", record, previous, None)
        self._observe(action)
        action.release = action.serving_after if action.serving_after != previous else None
        self.run.actions.append(action)
        return action

    def kill_pm2(self) -> None:
        """``pm2 kill``: the daemon and every worker go away (the site is down until the next deploy)."""
        self.mark("pm2 kill")
        self.target.pm2("kill", timeout=60)
        self.mark("PM2 daemon gone")

    def count_from_step_end(self, action: Action, names: Sequence[StepName]) -> None:
        """Count failures only from the end of ``action``'s step (e.g. once the deploy started the app)."""
        for step in action.command.steps:
            if step.name in names and step.end is not None:
                self.run.counted_from = step.end
                return
        self.run.counted_from = action.command.started

    def kill_worker_during_reload(self, delay: float = 1.0) -> LineHook:
        """A line hook: ``delay`` s after the reload step starts, SIGKILL one worker (an old one if any)."""
        names = self.session.strategy.reload_step
        fired = threading.Event()

        def kill_one() -> None:
            time.sleep(delay)
            workers = self.target.worker_releases()
            current = self.target.current()
            old = [(pid, release) for pid, release in workers if pid > 0 and release != current]
            victims = old or [(pid, release) for pid, release in workers if pid > 0]
            if not victims:
                self.mark("no worker to kill")
                return
            pid, release = victims[0]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.mark(f"worker {pid} already gone")
                return
            which = "old" if release != current else "new"
            self.mark(f"SIGKILL {which} worker pid {pid} ({self.session.versions.get(release or '', release)})")

        def hook(_: float, line: str) -> None:
            if not fired.is_set() and step_started(line) in names:
                fired.set()
                threading.Thread(target=kill_one, daemon=True).start()

        return hook

    def _observe(self, action: Action) -> None:
        # Give a strategy whose command returns before its workers listen (pm2 restart) a fair moment.
        self.target.wait_healthy(OBSERVE_WAIT)
        status, release, page = self.session.serving()
        action.health_after, action.serving_after, action.page_after = status, release, page
        if action.kind == "deploy" and action.release:
            release_dir = self.target.root / "releases" / action.release
            if release_dir.is_dir():
                others = [path for path in (self.target.root / "releases").iterdir()
                          if path.is_dir() and path.name != action.release]
                action.disk = disk_usage(release_dir, others)


@dataclass(frozen=True)
class Scenario:
    """A named case: what it does, what nextdeploy's contract says must happen, and its actions."""

    name: str
    what: str
    expect: str  # "live": the new release serves; "kept": the previous one still serves; "rolled-back"
    body: Callable[[RunContext], Any]
    needs_earlier_good: bool = False  # a rollback: there must be a good release older than the live one
