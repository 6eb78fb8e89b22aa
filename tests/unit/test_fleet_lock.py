"""The controller's side of the fleet lock (``fleet.lock.lock_every_host``): the first host's lock alone, then
the others' at once, over real flocks (the host side's ``take_host_lock``, one dir per host). Over ssh on
real test hosts: tests/integration/test_fleet_interrupts.py (two controllers at once)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nextdeploy.core.errors import LockError
from nextdeploy.fleet.lock import lock_every_host, take_host_lock
from nextdeploy.fleet.session import FleetSession

HOSTS = ["web1", "web2", "web3", "web4"]


class Hosts:
    """Each host's fleet lock as a real flock under ``base/<host>``; every take and release recorded."""

    def __init__(self, base: Path, barrier: threading.Barrier | None = None) -> None:
        self.base = base
        self.barrier = barrier  # when set, the hosts after the first wait there for each other
        self.events: list[tuple[str, str, str]] = []
        self.guard = threading.Lock()

    def session(self) -> FleetSession:
        return cast(FleetSession, SimpleNamespace(names=list(HOSTS)))

    def taker(self, holder: str) -> Any:
        def take(host: str) -> Any:
            if self.barrier is not None and host != HOSTS[0]:
                self.barrier.wait(timeout=10)  # passes only if every other host is being locked at once
            (self.base / host).mkdir(exist_ok=True)
            lock, _ = take_host_lock(self.base / host, host, holder)
            self.note(holder, "took", host)

            def release() -> None:
                lock.release()
                self.note(holder, "released", host)

            return SimpleNamespace(release=release)  # as HeldHostLock is used

        return take

    def note(self, holder: str, what: str, host: str) -> None:
        with self.guard:
            self.events.append((holder, what, host))

    def held_by(self, holder: str) -> set[str]:
        held: set[str] = set()
        for who, what, host in self.events:
            if who == holder:
                (held.add if what == "took" else held.discard)(host)
        return held


def test_the_first_hosts_lock_is_taken_alone_then_the_others_at_once(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path, threading.Barrier(len(HOSTS) - 1))
    held = lock_every_host(hosts.session(), "alice", hosts.taker("alice"))
    assert hosts.events[0] == ("alice", "took", "web1")
    assert hosts.held_by("alice") == set(HOSTS)
    held.close()
    assert hosts.held_by("alice") == set()
    assert [host for _, what, host in hosts.events if what == "released"][-1] == "web1"  # the first host's last


def test_a_host_locked_by_another_controller_releases_every_lock_taken_and_names_the_holder(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path)
    other = hosts.taker("bob")("web3")  # bob holds web3 alone (another host order, or leaving)
    with pytest.raises(LockError) as refused:
        lock_every_host(hosts.session(), "alice", hosts.taker("alice"))
    assert refused.value.message.startswith("the fleet is locked on web3 by ") and refused.value.exit_code == 12
    assert hosts.held_by("alice") == set() and ("alice", "took", "web1") in hosts.events
    other.release()


@pytest.mark.parametrize("attempt", range(20))
def test_of_two_controllers_at_once_exactly_one_holds_the_fleet_and_the_other_nothing(
        tmp_path: Path, attempt: int) -> None:
    hosts = Hosts(tmp_path)
    start = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def controller(name: str) -> None:
        start.wait(timeout=10)
        try:
            outcome[name] = lock_every_host(hosts.session(), name, hosts.taker(name))
        except LockError as refused:
            outcome[name] = refused

    threads = [threading.Thread(target=controller, args=(name,)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [name for name, got in outcome.items() if not isinstance(got, LockError)]
    assert len(winners) == 1, outcome
    loser = "bob" if winners == ["alice"] else "alice"
    assert isinstance(outcome[loser], LockError) and "locked on web1 by " in outcome[loser].message
    assert hosts.held_by(winners[0]) == set(HOSTS) and hosts.held_by(loser) == set()
    assert not any(who == loser and what == "took" for who, what, _ in hosts.events)  # refused at the first host
    outcome[winners[0]].close()


def test_a_build_box_is_locked_with_the_hosts_in_its_own_root(tmp_path: Path) -> None:
    """``machines``: the hosts and a build box (a deploy's ``machine_roots``). Another fleet building on the
    same box (its root) refuses this one there, which then holds nothing."""
    hosts = Hosts(tmp_path)
    machines = {**{host: f"/srv/{host}" for host in HOSTS}, "box": "/srv/build"}
    other = hosts.taker("bob")("box")
    with pytest.raises(LockError) as refused:
        lock_every_host(hosts.session(), "alice", hosts.taker("alice"), machines)
    assert refused.value.message.startswith("the fleet is locked on box by ") and refused.value.exit_code == 12
    assert hosts.held_by("alice") == set()
    other.release()
    held = lock_every_host(hosts.session(), "alice", hosts.taker("alice"), machines)
    assert hosts.held_by("alice") == {*HOSTS, "box"}
    held.close()
