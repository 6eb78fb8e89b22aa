"""fleet.rollout: the wave engine's order and its all-or-nothing revert, over a fake session (logic only:
tests/integration/test_fleet_deploy.py runs it against real hosts)."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from nextdeploy.core.errors import ExitCode, HostFailedError, Interrupted, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet import rollout
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


# --- Ctrl-C / SIGTERM of the controller mid-rollout: real signals to this process --------------------------


def interrupting(signum: int, at: str, *, hold: threading.Event | None = None) -> tuple[list[str], Any]:
    """A step that sends ``signum`` to this process (the main thread handles it) while ``at`` switches, and
    then finishes (or first waits for ``hold``): a Ctrl-C landing while a host's step is in flight."""
    ran: list[str] = []

    def step(host: str) -> dict[str, Any]:
        ran.append(host)
        if host == at:
            os.kill(os.getpid(), signum)
            time.sleep(0.3)  # still in flight when the signal is handled
            if hold is not None:
                hold.wait(30)
        return {"release": "B"}

    return ran, step


class LetThrough(Exception):
    """A stop signal the rollout let through to the test's own handler."""


def let_through(signum: int, frame: object) -> None:
    raise LetThrough(signal.Signals(signum).name)


@pytest.fixture(autouse=True)
def caught_signals() -> Iterator[None]:
    """SIGINT and SIGTERM that the rollout does not defer fail the test (not the whole pytest run)."""
    saved = {signum: signal.signal(signum, let_through) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def said(session: FakeSession) -> str:
    reporter: Any = session.reporter
    return str(reporter.stream.getvalue() + reporter.err_stream.getvalue())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_after_the_canary_starts_no_new_wave_and_puts_the_canary_back(signum: int) -> None:
    session = FakeSession(HOSTS)
    ran, step = interrupting(signum, "web1")
    with pytest.raises(RolloutFailed) as stopped:
        roll_out(session, "B", "A", step, batch=2)
    name = signal.Signals(signum).name
    assert ran == ["web1"]  # its step finished; no batch started
    assert session.calls == [("web1", ("rollback", "--to", "A"))]
    error = stopped.value.error
    assert isinstance(error, Interrupted) and error.signal_name == name
    assert error.message == (f"interrupted by {name} during the rollout of B; put web1 back to A; every host "
                             "serves what it served before")
    result = stopped.value.result
    assert [run["outcome"] for run in result.to_json()["hosts"]] == ["switched"] + ["not_started"] * 4
    assert result.hosts["web1"].put_back and result.decision.interrupted == name
    assert signal.getsignal(signal.SIGINT) is let_through  # the handlers are back


def test_a_step_still_running_after_the_grace_is_abandoned_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "IN_FLIGHT_SECONDS", 0.5)
    session = FakeSession(HOSTS[:3])
    hold = threading.Event()
    _ran, step = interrupting(signal.SIGINT, "web3", hold=hold)
    try:
        with pytest.raises(RolloutFailed) as stopped:
            roll_out(session, "B", "A", step, canary=1, batch=2)
    finally:
        hold.set()
    decision = stopped.value.result.decision
    assert decision.put_back == ("web1", "web2") and decision.unknown == ("web3",)
    assert sorted(session.calls) == [("web1", ("rollback", "--to", "A")), ("web2", ("rollback", "--to", "A"))]
    assert "web3 still at it when abandoned" in stopped.value.error.message
    assert "SIGINT: no new wave starts; waiting for web3 to finish activate (at most 0.5 s)" in said(session)
    assert "web3 was still at it when abandoned during activate" in said(session)


class SignalledDuringPutBack(FakeSession):
    """A session whose put-back gets a second Ctrl-C while it runs."""

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        return super().call(host, subcommand, timeout=timeout)


def test_a_second_ctrl_c_while_putting_back_is_said_and_the_put_back_goes_on() -> None:
    session = SignalledDuringPutBack(HOSTS[:3])
    _ran, step = interrupting(signal.SIGINT, "web2")
    with pytest.raises(RolloutFailed) as stopped:
        roll_out(session, "B", "A", step)
    assert sorted(session.calls) == [("web1", ("rollback", "--to", "A")), ("web2", ("rollback", "--to", "A"))]
    assert isinstance(stopped.value.error, Interrupted)
    assert stopped.value.error.message.startswith("interrupted by SIGINT during the rollout of B; put web1, web2 "
                                                  "back to A")
    assert "SIGINT again: no new wave starts; still putting web1, web2 back to A" in said(session)


def test_an_interrupted_rollout_whose_put_back_fails_is_a_rollback_error_naming_the_host() -> None:
    session = FakeSession(HOSTS[:3], fail_put_back=["web1"])
    _ran, step = interrupting(signal.SIGTERM, "web1")
    with pytest.raises(RolloutFailed) as stopped:
        roll_out(session, "B", "A", step)
    error = stopped.value.error
    assert isinstance(error, RollbackError) and error.exit_code is ExitCode.ROLLBACK_FAILED
    assert error.message.startswith("interrupted by SIGTERM; and web1 could not be put back to A")
