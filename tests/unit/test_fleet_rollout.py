"""fleet.rollout: the wave engine's order and its all-or-nothing revert, over a fake session (logic only:
tests/integration/test_fleet_deploy.py runs it against real hosts)."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from nextdeploy.core.errors import ExitCode, HostFailedError, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.rollout import RolloutFailed, put_back_argv, roll_out
from nextdeploy.remote.errors import HostUnreachableError


class FakeSession:
    def __init__(self, names: list[str], fail_put_back: Sequence[str] = ()) -> None:
        self.reporter = Reporter(stream=io.StringIO(), err_stream=io.StringIO(), force_plain=True)
        self._names = names
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fail_put_back = set(fail_put_back)
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        with self.lock:
            self.calls.append((host, tuple(subcommand)))
        if host in self.fail_put_back:
            raise HostFailedError(host, subcommand[0], 11, "pm2 is gone")
        return {}


def stepper(fail: dict[str, Exception]) -> tuple[list[str], Any]:
    ran: list[str] = []
    lock = threading.Lock()

    def step(host: str) -> dict[str, Any]:
        with lock:
            ran.append(host)
        if host in fail:
            raise fail[host]
        return {"release": "B"}

    return ran, step


HOSTS = ["web1", "web2", "web3", "web4", "web5"]


def test_every_host_switches_canary_first_then_batches() -> None:
    session = FakeSession(HOSTS)
    ran, step = stepper({})
    result = roll_out(session, "B", "A", step, canary=1, batch=2)
    assert result.waves == (("web1",), ("web2", "web3"), ("web4", "web5"))
    assert ran[0] == "web1" and sorted(ran) == HOSTS
    assert result.decision.succeeded and session.calls == []
    assert [run["outcome"] for run in result.to_json()["hosts"]] == ["switched"] * 5


def test_a_canary_failure_changes_no_other_host() -> None:
    session = FakeSession(HOSTS)
    ran, step = stepper({"web1": HostFailedError("web1", "activate", 9, "preflight: the app exited")})
    with pytest.raises(RolloutFailed) as failed:
        roll_out(session, "B", "A", step)
    assert ran == ["web1"] and session.calls == []  # nothing to put back: web1 put itself back
    assert failed.value.error.message == "web1 failed at activate: preflight: the app exited"
    assert failed.value.error.exit_code is ExitCode.PREFLIGHT_FAILED
    outcomes = {run.outcome.host: str(run.outcome.outcome) for run in failed.value.result.hosts.values()}
    assert outcomes == {"web1": "failed", **{host: "not_started" for host in HOSTS[1:]}}


def test_a_failure_on_the_last_host_puts_every_switched_host_back_at_once() -> None:
    session = FakeSession(HOSTS)
    ran, step = stepper({"web5": HostFailedError("web5", "activate", 10, "verify: worker 1 crashed")})
    with pytest.raises(RolloutFailed) as failed:
        roll_out(session, "B", "A", step, batch=2)
    assert sorted(ran) == HOSTS
    assert sorted(session.calls) == [(host, ("rollback", "--to", "A")) for host in HOSTS[:4]]
    assert failed.value.error.message.startswith("web5 failed at activate")
    assert failed.value.error.exit_code is ExitCode.ROLLED_BACK
    assert [h for h, run in failed.value.result.hosts.items() if run.put_back] == HOSTS[:4]


def test_a_host_lost_mid_step_is_neither_put_back_nor_left_unnamed() -> None:
    session = FakeSession(HOSTS[:3])
    lost = HostUnreachableError("web2", "web2 is unreachable: the connection was lost")
    _ran, step = stepper({"web2": lost})
    with pytest.raises(RolloutFailed) as failed:
        roll_out(session, "B", "A", step)
    assert session.calls == [("web1", ("rollback", "--to", "A"))]
    assert failed.value.error is lost and failed.value.result.decision.unknown == ("web2",)
    assert "web2 was lost during activate" in session.reporter.stream.getvalue() + \
        session.reporter.err_stream.getvalue()


def test_a_host_that_cannot_be_put_back_is_named_with_the_first_failure() -> None:
    session = FakeSession(HOSTS[:3], fail_put_back=["web1"])
    _ran, step = stepper({"web3": HostFailedError("web3", "activate", 9, "preflight failed")})
    with pytest.raises(RolloutFailed) as failed:
        roll_out(session, "B", "A", step, batch=1)
    error = failed.value.error
    assert isinstance(error, RollbackError) and error.exit_code is ExitCode.ROLLBACK_FAILED
    assert error.message.startswith("web3 failed at activate: preflight failed; and web1 could not be put back")


def test_a_first_deploy_puts_hosts_back_by_stopping_them() -> None:
    assert put_back_argv(None) == ["stop"]
    assert put_back_argv("A") == ["rollback", "--to", "A"]


def test_each_switched_host_goes_back_to_what_it_served_itself() -> None:
    """A fleet found on two releases (A on web1, Z on web2): each host is put back to its own."""
    session = FakeSession(HOSTS[:3])
    _ran, step = stepper({"web3": HostFailedError("web3", "activate", 10, "verify failed")})
    with pytest.raises(RolloutFailed):
        roll_out(session, "B", "A", step, previous_of={"web1": "A", "web2": "Z", "web3": "A"})
    assert sorted(session.calls) == [("web1", ("rollback", "--to", "A")), ("web2", ("rollback", "--to", "Z"))]
