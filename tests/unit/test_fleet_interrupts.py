"""Ctrl-C, SIGTERM of the fleet controller outside a rollout's waves, with real signals to this process (the main
thread handles them) over fake sessions: a convergence lets its wave in flight finish, starts no other and says
what is live where (``fleet.converge``); an interrupt before any host was told to switch says that nothing live
changed and what every host still serves (``rollout.before_any_switch``, in ``fleet.deploy`` and
``fleet.rollback``). The rollout's own: tests/unit/test_fleet_rollout.py, test_fleet_gated.py; on real hosts:
tests/integration/test_fleet_interrupts.py."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_fleet_ops import R1, R2, ScriptedSession
from tests.unit.test_fleet_rollout import caught_signals, let_through  # noqa: F401 (a fixture)

from nextdeploy.core import interrupts
from nextdeploy.core.config import load_config, parse_config
from nextdeploy.core.errors import ExitCode, HostFailedError, Interrupted
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet import commands, deploy, rollout
from nextdeploy.fleet.converge import converge
from nextdeploy.fleet.plan import HostStatus
from nextdeploy.fleet.rollback import run_fleet_rollback
from support.idleapp import config_file


def signal_me(signum: int, hold: threading.Event | None = None) -> None:
    """A stop signal to this process, while a host call is in flight (it lasts a little longer, or until
    ``hold``)."""
    os.kill(os.getpid(), signum)
    time.sleep(0.3)
    if hold is not None:
        hold.wait(30)


@dataclass
class SignallingSession(ScriptedSession):
    """A scripted fleet whose host ``at`` gets a stop signal sent while it runs ``on`` (once)."""

    at: str = ""
    on: str = "activate"
    signum: int = signal.SIGINT
    hold: threading.Event | None = None
    sent: bool = False

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        if host == self.at and subcommand[0] == self.on and not self.sent:
            self.sent = True
            signal_me(self.signum, self.hold)
        return super().call(host, subcommand, timeout=timeout)


def complete_everywhere(live: dict[str, str]) -> dict[str, list[str]]:
    return {host: [R1, R2] for host in live}


def mixed(tmp_path: Path, **signalling: Any) -> SignallingSession:
    """web1 on R2 (an interrupted rollout's canary), web2 and web3 on R1; both complete everywhere."""
    config, _ = config_file(tmp_path)
    live = {"web1": R2, "web2": R1, "web3": R1}
    return SignallingSession(list(live), dict(live), complete_everywhere(live), config=load_config(config),
                             **signalling)


# --- a convergence stopped ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_converging_lets_the_host_finish_starts_no_other_and_says_what_is_live(
        tmp_path: Path, signum: int) -> None:
    session = mixed(tmp_path, at="web2", signum=signum)  # canary 1, batch 1: web2, then web3
    with pytest.raises(Interrupted) as stopped:
        converge(session)  # type: ignore[arg-type]
    name = signal.Signals(signum).name
    assert session.switches() == [("web2", ("activate", R2))]  # finished; web3 never started
    assert session.live == {"web1": R2, "web2": R2, "web3": R1}  # no more mixed than found
    assert stopped.value.signal_name == name and stopped.value.explained
    assert stopped.value.message == (f"interrupted by {name} while converging the fleet to {R2}: web1 {R2}, web2 "
                                     f"{R2}, web3 {R1}; the next deploy or rollback converges the rest")
    assert signal.getsignal(signal.SIGINT) is let_through  # the handlers are back


def test_a_stop_signal_during_the_last_wave_of_a_convergence_says_it_converged(tmp_path: Path) -> None:
    session = mixed(tmp_path, at="web3", signum=signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        converge(session)  # type: ignore[arg-type]
    assert session.live == {"web1": R2, "web2": R2, "web3": R2}
    assert stopped.value.message == (f"interrupted by SIGTERM while converging the fleet to {R2}: converged "
                                     f"(every host serves {R2}); nothing else changed")


def test_a_converging_host_still_busy_after_the_grace_is_abandoned_and_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rollout, "IN_FLIGHT_SECONDS", 0.5)
    hold = threading.Event()
    session = mixed(tmp_path, at="web2", hold=hold)
    try:
        with pytest.raises(Interrupted) as stopped:
            converge(session)  # type: ignore[arg-type]
    finally:
        hold.set()
    assert stopped.value.message == (f"interrupted by SIGINT while converging the fleet to {R2}: web1 {R2}, web3 "
                                     f"{R1}; web2 still moving to {R2} when abandoned (its own nextdeploy finishes "
                                     "it); the next deploy or rollback converges the rest")
    said = capsys.readouterr()
    assert ("SIGINT: no new wave starts; waiting for web2 to finish activate (at most 0.5 s), then nextdeploy "
            f"stops (the hosts moved stay on {R2})") in said.out + said.err


def test_a_host_failing_in_an_interrupted_convergence_is_its_own_error(tmp_path: Path) -> None:
    class Failing(SignallingSession):
        def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
            answer = super().call(host, subcommand, timeout=timeout)
            if subcommand[0] == "activate":
                raise HostFailedError(host, "activate", 10, "verify: worker 1 crashed")
            return answer

    config, _ = config_file(tmp_path)
    live = {"web1": R2, "web2": R1, "web3": R1}
    session = Failing(list(live), dict(live), complete_everywhere(live), config=load_config(config), at="web2")
    with pytest.raises(HostFailedError) as failed:
        converge(session)  # type: ignore[arg-type]
    assert failed.value.message == "web2 failed at activate: verify: worker 1 crashed"
    assert failed.value.exit_code is ExitCode.ROLLED_BACK  # its own code, not 130


# --- a fleet deploy or rollback stopped before any host switched --------------------------------------------


@pytest.fixture
def stop_signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise as in the CLI (``interrupts.install``): KeyboardInterrupt, Interrupted."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupts._raise_interrupted)
    yield  # ``caught_signals`` puts the test's own handlers back


def fleet_deploy_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, at: str, signum: int,
                         live: dict[str, str | None], session: Any = None) -> Interrupted:
    """``fleet_deploy`` over a fake fleet serving ``live`` (nothing reaches a host), a stop signal sent at
    ``at`` (set-up, build); its Interrupted."""
    config = parse_config({"app": {"name": "hello", "source": str(tmp_path)}, "server": {"root": "/srv/hello"},
                           "hosts": [{"ssh": host} for host in live], "build": {"dir": str(tmp_path / "cache")}},
                          tmp_path)
    reporter = Reporter()
    session = session or SimpleNamespace(names=list(live), reporter=reporter, config=config, transport=None,
                                         roots={}, send_config=lambda *args: None)
    statuses = [HostStatus(host, True, release, (R1, R2)) for host, release in live.items()]

    def reached(step: str) -> None:
        if step == at:
            signal_me(signum)

    monkeypatch.setattr(deploy, "fleet_session", lambda *args: contextlib.nullcontext(session))
    monkeypatch.setattr(deploy, "setup_fleet", lambda *args, **kwargs: reached("setup"))
    monkeypatch.setattr(deploy, "fleet_lock", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr(deploy, "read_fleet_state", lambda _session: (statuses, []))
    monkeypatch.setattr(deploy, "decide_key", lambda *args: ("key", None))
    monkeypatch.setattr(deploy, "controller_context", lambda *args: None)
    monkeypatch.setattr(deploy, "_build", lambda *args: reached("build"))
    with pytest.raises(KeyboardInterrupt) as stopped:  # (a bare one would otherwise end the pytest run)
        deploy.fleet_deploy(config, b"", reporter)
    assert isinstance(stopped.value, Interrupted), repr(stopped.value)
    return stopped.value


@pytest.mark.usefixtures("stop_signals_raise")
@pytest.mark.parametrize(("at", "signum", "live", "said"), [
    ("setup", signal.SIGTERM, {"web1": R1, "web2": R1}, "every host still serves what it served (nothing live "
                                                        "changed)"),
    ("build", signal.SIGINT, {"web1": R1, "web2": R1}, f"every host still serves {R1} (nothing live changed)"),
    ("build", signal.SIGTERM, {"web1": None, "web2": None}, "nothing was live on any host, and nothing is (nothing "
                                                            "live changed)"),
], ids=["setup-SIGTERM", "build-SIGINT", "first-deploy-build-SIGTERM"])
def test_a_fleet_deploy_stopped_before_its_rollout_says_no_host_switched_and_what_each_serves(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, at: str, signum: int, live: dict[str, str | None],
        said: str) -> None:
    stopped = fleet_deploy_stopped(monkeypatch, tmp_path, at, signum, live)
    name = signal.Signals(signum).name
    assert stopped.signal_name == name
    assert stopped.message == f"interrupted by {name} before any host switched: {said}"


@pytest.mark.usefixtures("stop_signals_raise")
def test_a_convergence_stopped_in_a_fleet_deploy_says_what_is_live_where_not_that_nothing_changed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    session = mixed(tmp_path, at="web2", signum=signal.SIGTERM)
    session.send_config = lambda *args: None  # type: ignore[attr-defined]
    session.transport, session.roots = None, {}  # type: ignore[attr-defined]
    stopped = fleet_deploy_stopped(monkeypatch, tmp_path, "build", signal.SIGINT, dict(session.live), session)
    assert stopped.signal_name == "SIGTERM" and session.switches() == [("web2", ("activate", R2))]
    assert stopped.message.startswith(f"interrupted by SIGTERM while converging the fleet to {R2}: web1 {R2}, web2 "
                                      f"{R2}, web3 {R1}")


@pytest.mark.usefixtures("stop_signals_raise")
def test_a_fleet_rollback_stopped_before_its_rollout_says_no_host_switched(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config, _ = config_file(tmp_path)
    live = {"web1": R2, "web2": R2}
    session = SignallingSession(list(live), dict(live), complete_everywhere(live), config=load_config(config),
                                at="web2", on="releases", signum=signal.SIGTERM)
    monkeypatch.setattr(commands, "locked_fleet", lambda *args: contextlib.nullcontext(session))
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_fleet_rollback(session.config, b"", session.reporter, None)  # type: ignore[arg-type]
    assert session.switches() == []
    assert isinstance(stopped.value, Interrupted)
    assert stopped.value.message == ("interrupted by SIGTERM before any host switched: every host still serves what "
                                     "it served (nothing live changed)")
