"""Issue 23, items 6-7: the fleet lock's host side (real `nextdeploy host lock` processes and flock), the
fleet rollback's target, and crash convergence (the waves: tests/unit/test_fleet_rollout.py). The same over
ssh on real test hosts: tests/integration/test_fleet_interrupts.py and test_fleet_commands.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.core.config import Config, load_config
from nextdeploy.core.errors import ExitCode, LockError, ReleaseNotFoundError, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.converge import converge, converge_if_mixed, live_line
from nextdeploy.fleet.lock import waiting
from nextdeploy.fleet.rollback import fleet_rollback_target
from nextdeploy.fleet.session import FleetSession
from support.idleapp import config_file

R1, R2, R3 = "20261201-000000-aaaa", "20261202-000000-bbbb", "20261203-000000-cccc"


# --- the host's side of the fleet lock: real processes ----------------------------------------------------


def lock_process(root: Path, holder: str) -> subprocess.Popen[str]:
    """``host lock`` as the controller runs it: by the root alone (no config: none is sent before the lock)."""
    return subprocess.Popen([sys.executable, "-m", "nextdeploy", "host", "lock", "--root", str(root), "--as", "web1",
                             "--holder", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def answer(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"no answer; stderr: {process.communicate(timeout=30)[1]}"
    return dict(json.loads(line))


def test_host_lock_holds_while_stdin_is_open_and_refuses_a_second_holder_by_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = lock_process(root, "`nextdeploy deploy` by alice on laptop (pid 1)")
    try:
        held = answer(first)
        assert held["ok"] and held["result"]["holder"].startswith("`nextdeploy deploy` by alice")
        assert held["result"]["path"] == str(tmp_path / "root" / ".fleet.lock")
        second = lock_process(root, "`nextdeploy rollback` by bob on ci (pid 2)")
        refused = answer(second)
        assert second.wait(timeout=30) == ExitCode.LOCKED
        assert not refused["ok"] and refused["error"]["code"] == ExitCode.LOCKED
        message = refused["error"]["message"]
        assert "locked on web1 by `nextdeploy deploy` by alice on laptop (pid 1), since 20" in message, message
        assert first.poll() is None  # still holding
    finally:
        assert first.stdin is not None
        first.stdin.close()  # the controller's ssh session ends: the lock goes
        assert first.wait(timeout=30) == 0
    third = lock_process(root, "`nextdeploy deploy` by carol on ci (pid 3)")
    assert answer(third)["ok"]
    third.send_signal(signal.SIGKILL)  # a holder killed outright: the kernel drops its flock
    third.wait(timeout=30)
    fourth = lock_process(root, "`nextdeploy deploy` by dave on ci (pid 4)")
    assert answer(fourth)["ok"]
    assert fourth.stdin is not None
    fourth.stdin.close()
    assert fourth.wait(timeout=30) == 0


class Clock:
    """A fake clock for ``fleet.lock.waiting``: ``sleep`` moves it on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def refusing(times: int, holders: Sequence[str] = ("alice",)) -> tuple[list[int], Any]:
    tries: list[int] = []

    def take() -> str:
        tries.append(1)
        if len(tries) <= times:
            holder = holders[min(len(tries), len(holders)) - 1]
            raise LockError(f"the fleet is locked on web1 by {holder}", hint="wait")
        return "held"

    return tries, take


def test_the_fleet_lock_is_refused_at_once_without_a_lock_timeout() -> None:
    clock, said = Clock(), []
    tries, take = refusing(1)
    with pytest.raises(LockError) as refused:
        waiting(take, 0, said.append, clock=clock, sleep=clock.sleep)
    assert refused.value.message == "the fleet is locked on web1 by alice" and refused.value.exit_code == 12
    assert len(tries) == 1 and clock.slept == [] and said == []


def test_with_a_lock_timeout_the_fleet_lock_is_tried_again_saying_each_holder_once() -> None:
    clock, said = Clock(), []
    tries, take = refusing(3, holders=("alice", "alice", "bob"))
    assert waiting(take, 30, said.append, clock=clock, sleep=clock.sleep, poll=1.0) == "held"
    assert len(tries) == 4 and clock.slept == [1.0, 1.0, 1.0]
    assert said == ["the fleet is locked on web1 by alice: waiting for it (at most 30 s in all, 30 s left)",
                    "the fleet is locked on web1 by bob: waiting for it (at most 30 s in all, 28 s left)"]


def test_a_lock_timeout_that_runs_out_is_exit_12_saying_how_long_it_waited() -> None:
    clock, said = Clock(), []
    tries, take = refusing(1000)
    with pytest.raises(LockError) as refused:
        waiting(take, 2.5, said.append, clock=clock, sleep=clock.sleep, poll=1.0)
    assert refused.value.message == "the fleet is locked on web1 by alice (waited 2.5 s)"
    assert clock.slept == [1.0, 1.0, 0.5] and len(tries) == 4 and len(said) == 1


# --- fleet rollback: the target --------------------------------------------------------------------------


def releases(current: str, good: Sequence[str], usable: Sequence[str] | None = None,
             own: str | None = None) -> dict[str, Any]:
    return {"current": current, "usable": list(usable if usable is not None else [*good, current]),
            "releases": [{"id": release, "status": "active"} for release in good], "rollback_target": own}


def test_rollback_target_is_what_every_host_would_pick_or_the_newest_older_good_one_everywhere() -> None:
    agree = {"web1": releases(R3, [R1, R2, R3], own=R2), "web2": releases(R3, [R1, R2, R3], own=R2)}
    assert fleet_rollback_target(agree, R3, None) == R2
    # web2 never had R2 go live there (it was shipped only): the newest good release on both is R1
    differ = {"web1": releases(R3, [R1, R2, R3], own=R2), "web2": releases(R3, [R1, R3], own=R1)}
    assert fleet_rollback_target(differ, R3, None) == R1
    with pytest.raises(RollbackError, match="no earlier good release on every host"):
        fleet_rollback_target({"web1": releases(R1, [R1]), "web2": releases(R1, [R1])}, R1, None)


def test_rollback_to_must_be_complete_on_every_host_and_not_live() -> None:
    hosts = {"web1": releases(R3, [R1, R3]), "web2": releases(R3, [R3], usable=[R3])}
    with pytest.raises(ReleaseNotFoundError, match=f"release {R1} is not complete .* on web2$"):
        fleet_rollback_target(hosts, R3, R1)
    with pytest.raises(RollbackError, match="already live on every host"):
        fleet_rollback_target(hosts, R3, R3)
    assert fleet_rollback_target({"web1": releases(R3, [R1, R3])}, R3, R1) == R1


# --- waves and convergence against a scripted fleet (logic only) ----------------------------------------


@dataclass
class ScriptedSession:
    """A FleetSession whose hosts answer from a script: the calls made are recorded."""

    names: list[str]
    live: dict[str, str]
    usable: dict[str, list[str]]
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    reporter: Reporter = field(default_factory=Reporter)
    config: Config | None = None

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((host, tuple(subcommand)))
        if subcommand[0] == "releases":
            return {"current": self.live[host], "usable": self.usable[host], "releases": []}
        target = subcommand[-1]
        self.live[host] = target
        return {"release": target}

    def each(self, work: Any, hosts: Sequence[str] | None = None) -> dict[str, Any]:
        return {host: work(host) for host in (self.names if hosts is None else hosts)}

    def call_each(self, subcommand: Sequence[str], hosts: Sequence[str] | None = None, *,
                  timeout: float | None = None) -> dict[str, Any]:
        return self.each(lambda host: self.call(host, subcommand), hosts)

    def switches(self) -> list[tuple[str, tuple[str, ...]]]:
        return [call for call in self.calls if call[1][0] != "releases"]


def scripted(tmp_path: Path, live: dict[str, str], usable: dict[str, list[str]], **extra: Any) -> FleetSession:
    config, _ = config_file(tmp_path)
    session = ScriptedSession(list(live), dict(live), usable, config=load_config(config), **extra)
    return session  # type: ignore[return-value]


def test_a_mixed_fleet_is_named_and_converged_canary_first(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    live = {"web1": R2, "web2": R1, "web3": R1}
    session = scripted(tmp_path, live, {key: [R1, R2] for key in live})
    statuses = converge_if_mixed(session)
    out = capsys.readouterr().out
    assert f"the fleet is on mixed releases: web1 {R2}, web2 {R1}, web3 {R1}" in out
    scripted_session: Any = session
    assert scripted_session.switches() == [("web2", ("activate", R2)), ("web3", ("activate", R2))]
    assert [status.live for status in statuses] == [R2, R2, R2]
    assert converge(session) == (statuses, ())  # converged: nothing moves
    # Converged: nothing more to do.
    scripted_session.calls.clear()
    converge_if_mixed(session)
    assert scripted_session.switches() == []


def test_a_mixed_fleet_without_a_release_on_every_host_is_refused(tmp_path: Path) -> None:
    live = {"web1": R2, "web2": R1}
    session = scripted(tmp_path, live, {"web1": [R2], "web2": [R1]})
    with pytest.raises(Exception, match="no release they serve is complete on every host") as raised:
        converge_if_mixed(session)
    assert getattr(raised.value, "exit_code", None) == ExitCode.RELEASE_INVALID


def test_live_line_names_every_host_in_order() -> None:
    from nextdeploy.fleet.plan import HostStatus

    assert live_line([HostStatus("web1", True, R2), HostStatus("web2", False),
                      HostStatus("web3", True, None)]) == f"web1 {R2}, web2 unreachable, web3 none"



# --- deploy --dry-run on a fleet -------------------------------------------------------------------------


def test_fleet_dry_run_shows_each_hosts_commands_by_wave_and_contacts_no_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nextdeploy.cli.main import main

    config, _ = config_file(tmp_path)
    text = config.read_text().replace(f'root = "{tmp_path / "root"}"', 'root = "/srv/hello"')
    config.write_text(text + '\n[rollout]\nbatch = 2\n\n' + "".join(
        f'[[hosts]]\nssh = "{name}"\n\n' for name in ("web1", "web2", "deploy@web3:2222")))
    ran: list[Any] = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: ran.append(args))
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(SystemExit) as exited:
        main(["deploy", "--dry-run", "--json", "-c", str(config)])
    assert exited.value.code in (0, None) and ran == []
    plan = json.loads(capsys.readouterr().out)
    assert plan["waves"] == [["web1"], ["web2", "deploy@web3:2222"]]
    steps = plan["steps"]
    binary = "/srv/hello/tools/nextdeploy-"
    locks = [index for index, line in enumerate(steps) if line.startswith("lock ")]
    assert steps[locks[0]].startswith(f"lock web1: {binary}")
    assert "host lock --root /srv/hello --as web1 --holder" in steps[locks[0]]
    configs = [index for index, line in enumerate(steps) if line.startswith("send the config to ")]
    assert len(locks) == len(configs) == 3 and max(locks) < min(configs)  # nothing is sent before the lock
    activations = [line for line in steps if "host activate" in line]  # every host proven before any switches
    assert [line.split(":")[0] for line in activations] == ["prove on web1", "prove on web2", "prove on deploy@web3"]
    assert activations[0].startswith(f"prove on web1: {binary}") and "--as web1" in activations[0]
    assert "--as deploy@web3:2222" in activations[2] and "-c /srv/hello/nextdeploy.toml" in activations[2]
    assert all(" --gate" in line for line in activations)
    switches = [line for line in steps if line.startswith(("canary", "batch"))]
    assert [line.split(": ")[:2] for line in switches] == [["canary", "web1"], ["batch 1", "web2"],
                                                           ["batch 1", "deploy@web3:2222"]]
    assert steps.index(activations[-1]) < steps.index(switches[0])
    assert not (tmp_path / "root").exists()
