"""The wave engine: one host step run over the fleet, canary first, then batches, all or nothing.

``roll_out(session, target, previous, step)`` runs ``step(host)`` (e.g. ``host activate <target>``) on the
hosts wave by wave (``plan.rollout_waves``: config order, ``[rollout] canary`` then ``batch``), each wave's
hosts at once. The first wave with a failure ends the rollout: the hosts after it are not started. Then
``plan.after_rollout`` decides, and every host that switched is put back to ``previous`` at once
(``host rollback --to <previous>``; ``host stop`` when there was none), and the failure is raised: the
host's own error (``HostFailedError``: "web3 failed at activate: ...", its exit code) or ssh's.

A deploy (``fleet.deploy``) and a fleet rollback use it alike: only ``step`` differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from nextdeploy.core.errors import HostFailedError, NextdeployError, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.parallel import MAX_PARALLEL
from nextdeploy.fleet.plan import HostOutcome, Outcome, RolloutDecision, after_rollout, rollout_waves
from nextdeploy.remote.errors import SshError


class Session(Protocol):
    """What the engine needs of a ``FleetSession``."""

    reporter: Reporter

    @property
    def names(self) -> list[str]: ...

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]: ...


Step = Callable[[str], dict[str, Any]]


@dataclass
class HostRun:
    """One host's part in a rollout: what happened, how long it took, what it answered."""

    outcome: HostOutcome
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    put_back: bool = False  # switched, then put back to the previous release

    def to_json(self) -> dict[str, Any]:
        return {"host": self.outcome.host, "outcome": str(self.outcome.outcome), "step": self.outcome.step,
                "error": self.outcome.error, "seconds": round(self.seconds, 3), "put_back": self.put_back}


@dataclass
class RolloutResult:
    target: str
    previous: str | None
    waves: tuple[tuple[str, ...], ...]
    hosts: dict[str, HostRun]  # config order
    decision: RolloutDecision
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "previous": self.previous, "waves": [list(wave) for wave in self.waves],
                "hosts": [run.to_json() for run in self.hosts.values()], "decision": self.decision.to_json(),
                "seconds": round(self.seconds, 3)}


class RolloutFailed(Exception):
    """Raised by ``roll_out`` once the hosts were put back: the host's error and the whole result."""

    def __init__(self, error: NextdeployError, result: RolloutResult) -> None:
        super().__init__(error.message)
        self.error, self.result = error, result


def roll_out(session: Session, target: str, previous: str | None, step: Step, *, canary: int = 1,
             batch: int | str = 1, step_name: str = "activate",
             previous_of: Mapping[str, str | None] | None = None) -> RolloutResult:
    """Run ``step`` on every host, wave by wave, all or nothing (see the module's doc).

    ``previous_of``: what each host served before, when the hosts did not all serve ``previous`` (a host
    that switched is put back to its own release, never to another host's).

    Returns the result when every host passed. Otherwise puts back every host that switched and raises
    ``RolloutFailed`` carrying the first failing host's error (config order) and the result; when a host
    cannot be put back, that error is a ``RollbackError`` naming it, the original failure in its details."""
    started = time.monotonic()
    reporter = session.reporter
    waves = rollout_waves(session.names, canary, batch)
    runs: dict[str, HostRun] = {}
    errors: dict[str, NextdeployError] = {}
    for number, wave in enumerate(waves):
        kind = "canary" if number == 0 and canary else f"batch {number + (0 if canary else 1)}"
        reporter.info(f"{kind}: {step_name} {target} on {', '.join(wave)}")
        for host, (run, error) in zip(wave, _run_wave(wave, step, step_name), strict=True):
            runs[host] = run
            if error is not None:
                errors[host] = error
            _say(reporter, run, step_name)
        if errors:
            break
    for host in session.names:
        runs.setdefault(host, HostRun(HostOutcome(host, Outcome.NOT_STARTED)))
    decision = after_rollout([runs[host].outcome for host in session.names], target, previous)
    result = RolloutResult(target, previous, waves, runs, decision, 0.0)
    if decision.succeeded:
        result.seconds = time.monotonic() - started
        return result
    assert decision.failure is not None
    failed = errors[decision.failure.host]
    problem = put_back(session, decision, runs, previous_of or {})
    for host in decision.unknown:
        reporter.warn(f"{host} was lost during {step_name}: its state is read and converged by the next deploy "
                      "or rollback")
    result.seconds = time.monotonic() - started
    raise RolloutFailed(problem if problem is not None else failed, result)


def _run_wave(wave: Sequence[str], step: Step, step_name: str) -> list[tuple[HostRun, NextdeployError | None]]:
    def one(host: str) -> tuple[HostRun, NextdeployError | None]:
        began = time.monotonic()
        try:
            answer = step(host)
        except SshError as error:  # lost during the step: it may have switched
            outcome = HostOutcome(host, Outcome.UNREACHABLE, step_name, error.message)
            return HostRun(outcome, time.monotonic() - began), error
        except HostFailedError as error:  # its own failure path put its previous release back
            said = error.message.removeprefix(f"{host} failed at {error.step}: ")
            return HostRun(HostOutcome(host, Outcome.FAILED, error.step, said), time.monotonic() - began), error
        except NextdeployError as error:
            outcome = HostOutcome(host, Outcome.FAILED, step_name, error.message)
            return HostRun(outcome, time.monotonic() - began), error
        return HostRun(HostOutcome(host, Outcome.SWITCHED), time.monotonic() - began, answer), None

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(wave))), thread_name_prefix="wave") as pool:
        return list(pool.map(one, wave))


def _say(reporter: Reporter, run: HostRun, step_name: str) -> None:
    host, outcome = run.outcome.host, run.outcome.outcome
    if outcome is Outcome.SWITCHED:
        reporter.info(f"ok {host}: {step_name} ({run.seconds:.1f} s)")
    else:
        reporter.info(f"FAILED {host}: {run.outcome.step or step_name}: {run.outcome.error} ({run.seconds:.1f} s)")


def put_back_argv(previous: str | None) -> list[str]:
    """The host command that puts a switched host back: the previous release, or none (a first deploy)."""
    return ["rollback", "--to", previous] if previous else ["stop"]


def put_back(session: Session, decision: RolloutDecision, runs: dict[str, HostRun],
             previous_of: Mapping[str, str | None] | None = None) -> NextdeployError | None:
    """Every host of ``decision.put_back`` back on the previous release at once (its own, in ``previous_of``,
    when given). None when all are; else a ``RollbackError`` naming the hosts that could not be put back (the
    rollout's failure in its details)."""
    hosts = list(decision.put_back)
    if not hosts:
        return None
    reporter = session.reporter
    before = {host: (previous_of or {}).get(host, decision.previous) for host in hosts}
    reporter.info(f"putting {', '.join(hosts)} back to {decision.previous or 'nothing (stopped)'}: "
                  f"{decision.message()}")
    lost: dict[str, NextdeployError] = {}

    def one(host: str) -> None:
        began = time.monotonic()
        try:
            session.call(host, put_back_argv(before[host]))
        except NextdeployError as error:
            lost[host] = error
            reporter.info(f"FAILED {host}: put back: {error.message}")
            return
        runs[host].put_back = True
        reporter.info(f"ok {host}: put back to {before[host] or 'nothing'} ({time.monotonic() - began:.1f} s)")

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts)), thread_name_prefix="putback") as pool:
        list(pool.map(one, hosts))
    if not lost:
        return None
    first = next(iter(lost.values()))
    return RollbackError(
        f"{decision.message()}; and {', '.join(lost)} could not be put back to {decision.previous or 'nothing'}: "
        f"{first.message}",
        hint="run `nextdeploy rollback` once the hosts answer: it converges every host",
        details=[f"{host}: {error.message}" for host, error in lost.items()])
