"""fleet.gated: the release proven on every host (phase 1) before any host is told ``go`` (phase 2), over a
fake session and fake gated calls (logic only: tests/integration/test_fleet_deploy.py runs it on real hosts)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from tests.unit.test_fleet_rollout import HOSTS, FakeSession, caught_signals  # noqa: F401 (a fixture)

from nextdeploy.core.errors import ExitCode, HostFailedError, Interrupted
from nextdeploy.fleet.gated import roll_out_gated
from nextdeploy.fleet.rollout import RolloutFailed
from nextdeploy.remote.errors import HostUnreachableError


class FakeGate:
    """One host's ``host activate --gate``: proven after ``delay`` s (or failing there), then waits for a word."""

    def __init__(self, host: str, log: list[tuple[str, str]], lock: threading.Lock, *, delay: float = 0.05,
                 fails_proving: Exception | None = None, fails_after_go: Exception | None = None,
                 on_ready: Any = None) -> None:
        self.host, self.log, self.lock, self.delay = host, log, lock, delay
        self.fails_proving, self.fails_after_go, self.on_ready = fails_proving, fails_after_go, on_ready
        self.word: str | None = None

    def _note(self, what: str) -> None:
        with self.lock:
            self.log.append((self.host, what))

    def proven(self) -> bool:
        time.sleep(self.delay)
        if self.fails_proving is not None:
            return False
        self._note("ready")
        if self.on_ready is not None:
            self.on_ready()
        return True

    def go(self) -> None:
        if self.word is None:
            self.word = "go"
            self._note("go")

    def abort(self) -> None:
        if self.word is None and self.fails_proving is None:  # (a command that ended reads no word)
            self.word = "abort"
            self._note("abort")

    def answer(self) -> dict[str, Any]:
        if self.fails_proving is not None:
            raise self.fails_proving
        if self.word == "go":
            if self.fails_after_go is not None:
                raise self.fails_after_go
            return {"release": "B"}
        raise HostFailedError(self.host, "activate", 21, "release B was proven but not switched to: abort")


def gates(**specs: dict[str, Any]) -> tuple[list[tuple[str, str]], Any]:
    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    return log, lambda host: FakeGate(host, log, lock, **specs.get(host, {}))


def outcomes(failed: RolloutFailed) -> dict[str, str]:
    return {host: str(run.outcome.outcome) for host, run in failed.result.hosts.items()}


def test_every_host_is_proven_before_the_canary_is_told_go_then_batches_switch() -> None:
    session = FakeSession(HOSTS)
    log, start = gates(web3={"delay": 0.4})  # the slowest host holds every switch
    result = roll_out_gated(session, "B", "A", start, canary=1, batch=2)
    readies = [index for index, (_, what) in enumerate(log) if what == "ready"]
    goes = [(host, index) for index, (host, what) in enumerate(log) if what == "go"]
    assert len(readies) == 5 and max(readies) < min(index for _, index in goes)
    assert goes[0][0] == "web1" and {host for host, _ in goes[1:3]} == {"web2", "web3"}
    assert result.decision.succeeded and session.calls == []
    assert [run["outcome"] for run in result.to_json()["hosts"]] == ["switched"] * 5


def test_a_host_failing_its_window_aborts_every_other_host_and_nothing_switches() -> None:
    session = FakeSession(HOSTS)
    error = HostFailedError("web5", "activate", 9, "preflight: /api/health answered 500")
    log, start = gates(web5={"fails_proving": error, "delay": 0.2})
    with pytest.raises(RolloutFailed) as failed:
        roll_out_gated(session, "B", "A", start)
    assert failed.value.error is error and failed.value.error.exit_code is ExitCode.PREFLIGHT_FAILED
    assert not [entry for entry in log if entry[1] == "go"]
    assert sorted(host for host, what in log if what == "abort") == HOSTS[:4]
    assert session.calls == []  # nothing to put back: nothing switched
    assert outcomes(failed.value) == {**{host: "aborted" for host in HOSTS[:4]}, "web5": "failed"}
    assert failed.value.result.decision.put_back == ()


def test_a_host_lost_while_proving_is_named_and_the_others_are_aborted() -> None:
    session = FakeSession(HOSTS[:3])
    lost = HostUnreachableError("web2", "web2 is unreachable: the connection was lost")
    log, start = gates(web2={"fails_proving": lost})
    with pytest.raises(RolloutFailed) as failed:
        roll_out_gated(session, "B", "A", start)
    decision = failed.value.result.decision
    assert failed.value.error is lost and decision.unknown == () and decision.put_back == ()  # it never got `go`
    assert sorted(host for host, what in log if what == "abort") == ["web1", "web3"]


def test_a_host_failing_after_its_go_puts_back_the_switched_ones_and_aborts_the_rest() -> None:
    session = FakeSession(HOSTS)
    error = HostFailedError("web3", "activate", 10, "verify: worker 1 crashed")
    log, start = gates(web3={"fails_after_go": error})
    with pytest.raises(RolloutFailed) as failed:
        roll_out_gated(session, "B", "A", start, canary=1, batch=2)
    assert failed.value.error is error
    assert sorted(session.calls) == [("web1", ("rollback", "--to", "A")), ("web2", ("rollback", "--to", "A"))]
    assert sorted(host for host, what in log if what == "abort") == ["web4", "web5"]
    assert outcomes(failed.value) == {"web1": "switched", "web2": "switched", "web3": "failed",
                                      "web4": "aborted", "web5": "aborted"}


def test_a_stop_signal_while_proving_aborts_every_host() -> None:
    session = FakeSession(HOSTS[:3])
    log, start = gates(web1={"on_ready": lambda: os.kill(os.getpid(), signal.SIGTERM)},
                       web2={"delay": 0.5}, web3={"delay": 0.5})
    with pytest.raises(RolloutFailed) as stopped:
        roll_out_gated(session, "B", "A", start)
    error = stopped.value.error
    assert isinstance(error, Interrupted) and error.signal_name == "SIGTERM"
    assert error.message == ("interrupted by SIGTERM before any host switched: every host still serves A (nothing "
                             "live changed)")
    assert not [entry for entry in log if entry[1] == "go"] and session.calls == []
    assert outcomes(stopped.value) == {"web1": "aborted", "web2": "aborted", "web3": "aborted"}


def test_a_stop_signal_after_the_canary_switched_puts_it_back_and_aborts_the_rest() -> None:
    session = FakeSession(HOSTS[:3])

    class Signalling(FakeGate):
        def answer(self) -> dict[str, Any]:
            if self.host == "web1":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
            return super().answer()

    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    with pytest.raises(RolloutFailed) as stopped:
        roll_out_gated(session, "B", "A", lambda host: Signalling(host, log, lock))
    assert isinstance(stopped.value.error, Interrupted)
    assert session.calls == [("web1", ("rollback", "--to", "A"))]
    assert sorted(host for host, what in log if what == "abort") == ["web2", "web3"]
    assert outcomes(stopped.value) == {"web1": "switched", "web2": "aborted", "web3": "aborted"}
