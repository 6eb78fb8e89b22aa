"""The fleet operations modules' shared fleet (test_fleet_commands.py, test_fleet_interrupts.py): two real
builds of the example app (v1, v2: a code-only change) made ONCE per session by local deploys of a Site
(``two_releases``, the session fixture of tests/conftest.py), and, per module, a fleet of 3 test hosts set up by
the real `nextdeploy setup`, both releases shipped to every host (fleet.ship) and put live there by each host's
own nextdeploy (`host activate`, v1 then v2), as a fleet deploy does (``ops_fleet``). The tests then run the
real CLI on the controller. Also what those modules use to watch and stop a controller."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.config import load_config
from nextdeploy.core.errors import ExitCode
from nextdeploy.core.ui import Reporter
from nextdeploy.demo.exampleapp import copy_example
from nextdeploy.fleet.hostcall import send_config
from nextdeploy.fleet.prepare import prepare_key
from nextdeploy.fleet.session import fleet_session
from nextdeploy.fleet.ship import ship
from support.fleet import Fleet, running_fleet
from support.processes import as_in_a_terminal
from support.site import Site, tool_env

HEALTH = {"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 15, "stable_for": 2}
SETTLE_SECONDS = 120  # bound on waiting for a host's own nextdeploy to finish after its controller died


@dataclass(frozen=True)
class TwoReleases:
    """v1 and v2 built by a local deploy (a Site, closed since): its root holds both releases and the Next.js
    build cache."""

    root: Path
    v1: str
    v2: str


def build_two_releases(base: Path) -> TwoReleases:
    site = Site(base / "site")
    try:
        site.deploy("v1").expect_ok()
        v1 = site.current()
        site.deploy("v2").expect_ok()
        v2 = site.current()
    finally:
        site.close()
    assert v1 and v2 and v1 < v2
    return TwoReleases(site.root, v1, v2)


@dataclass
class Ops:
    fleet: Fleet
    v1: str
    v2: str
    app: Path  # the app's source (v2, the module's own copy), which the config deploys: a fleet `deploy` builds it

    def live(self) -> dict[str, str | None]:
        return self.fleet.live_releases()

    def everywhere(self, release: str) -> dict[str, str]:
        return dict.fromkeys(self.fleet.hosts.names, release)


@contextlib.contextmanager
def ops_fleet(base: Path, built: TwoReleases) -> Iterator[Ops]:
    """A fleet of 3 hosts serving ``built.v2`` (``built.v1`` live before it), the config deploying a copy of
    the app's v2 source under ``base``."""
    app = copy_example(base / "app", "v2")
    with running_fleet(base / "fleet") as fleet:
        config = fleet.write_config(base / "nextdeploy.toml", app, health=HEALTH, server={"instances": 1})
        fleet.nextdeploy("setup", timeout=900).expect_ok()
        # The controller's own builds (the fleet deploys) start from the Site's Next.js build cache: a cold
        # `next build` would cost CI minutes.
        work = fleet.base / "build" / "work"
        shutil.copytree(built.root / "cache" / "next", work / "cache" / "next", symlinks=True)
        shutil.copyfile(built.root / ".nextdeploy-root", work / ".nextdeploy-root")
        with fleet_session(load_config(config), Reporter()) as session:
            for release in (built.v1, built.v2):
                ship(session.transport, session.roots, built.root / "releases" / release)
            prepare_key(session.transport, session.roots)
            session.each(lambda host: send_config(session.transport, host, session.roots[host], config.read_bytes()))
            for release in (built.v1, built.v2):
                session.call_each(["activate", release])
        yield Ops(fleet, built.v1, built.v2, app)


def processes_reaching(fleet: Fleet) -> dict[int, str]:
    """This machine's processes that reach the test hosts (ssh with their config on its command line): pid ->
    command line."""
    marker = str(fleet.hosts.ssh_config)
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in command:
                found[int(entry.name)] = command
    return found


def our_processes(fleet: Fleet) -> list[str]:
    """The command lines of this machine's processes that reach the test hosts."""
    return list(processes_reaching(fleet).values())


def stop_masters(fleet: Fleet, control_dir: str | None = None) -> None:
    """The ssh connection masters a SIGKILLed controller left (they outlive it by ControlPersist): ours
    only, found by the test ssh config (and the killed run's control dir) on their command line."""
    for pid, command in processes_reaching(fleet).items():
        if command.startswith("ssh ") and (control_dir is None or control_dir in command):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def host_nextdeploys(fleet: Fleet) -> dict[str, list[str]]:
    """The nextdeploy processes running on each host."""
    return {name: [command for command in fleet.leftovers(name).values() if "nextdeploy host" in command]
            for name in fleet.hosts.names}


def no_host_lock_left(fleet: Fleet) -> bool:
    return not any("host lock" in command for commands in host_nextdeploys(fleet).values() for command in commands)


def kill_controller(fleet: Fleet, controller: subprocess.Popen[bytes]) -> None:
    """SIGKILL the controller's process group, and what it leaves running of ours (its ssh masters, and its
    ssh sessions, which run in sessions of their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(controller.pid, signal.SIGKILL)
    controller.wait(30)
    stop_masters(fleet)


def healthy(fleet: Fleet) -> dict[str, Any]:
    """``status --json``, once it said every host is healthy."""
    status: dict[str, Any] = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert all(host["healthy"] for host in status["hosts"]), status
    return status


def settled(ops: Ops) -> dict[str, str | None]:
    """Every host's live release once the hosts' own nextdeploy finished what its killed controller left."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while any(host_nextdeploys(ops.fleet).values()):
        assert time.monotonic() < deadline, f"nextdeploy still runs on the hosts: {host_nextdeploys(ops.fleet)}"
        time.sleep(0.5)
    after_kill = ops.live()
    print(f"after the kill: {after_kill}")
    return after_kill


def start_controller(ops: Ops, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The real CLI on the controller, in a process group of its own (as a terminal's foreground job, Ctrl-C
    and hang-up not ignored even when this run's were), its output into a file (a pipe nobody reads would
    block it)."""
    assert ops.fleet.config is not None
    output = ops.fleet.base / f"{name}.log"
    with output.open("wb") as sink:
        controller = subprocess.Popen([sys.executable, "-m", "nextdeploy", *args, "-c", str(ops.fleet.config)],
                                      stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=tool_env(),
                                      start_new_session=True, preexec_fn=as_in_a_terminal)
    return controller, output


def said_before(controller: subprocess.Popen[bytes], output: Path, text: str, what: str,
                timeout: float = 300) -> None:
    """Wait until ``text`` is in the controller's ``output`` (``start_controller``); fail if the controller
    ends first or after ``timeout`` s (``what``: what the text means)."""
    deadline = time.monotonic() + timeout
    while text not in output.read_text():
        assert controller.poll() is None, f"the command ended before {what}:\n{output.read_text()}"
        assert time.monotonic() < deadline, f"never saw that {what}"
        time.sleep(0.02)


def stopped_once_said(ops: Ops, name: str, args: tuple[str, ...], text: str, what: str, signum: int, *,
                      timeout: float = 300, settle: float = 0.0) -> str:
    """``nextdeploy <args>`` started (``start_controller``), sent ``signum`` (to its process group, as a
    terminal's Ctrl-C is) ``settle`` s after ``text`` is in its output: its output, once it exited 130."""
    controller, output = start_controller(ops, name, *args)
    try:
        said_before(controller, output, text, what, timeout)
        time.sleep(settle)
        os.killpg(controller.pid, signum)
        code = controller.wait(300)
    finally:
        kill_controller(ops.fleet, controller)
    said = output.read_text()
    print(said)
    assert code == ExitCode.INTERRUPTED, said
    return said
