"""The wave engine: one host step run over the fleet, canary first, then batches, all or nothing.

``roll_out(session, target, previous, step)`` runs ``step(host)`` (e.g. ``host activate <target>``) on the
hosts wave by wave (``plan.rollout_waves``: config order, ``[rollout] canary`` then ``batch``), each wave's
hosts at once. The first wave with a failure ends the rollout: the hosts after it are not started. Then
``plan.after_rollout`` decides, and every host that switched is put back to ``previous`` at once
(``host rollback --to <previous>``; ``host stop`` when there was none), and the failure is raised: the
host's own error (``HostFailedError``: "web3 failed at activate: ...", its exit code) or ssh's.

A deploy (``fleet.deploy``) and a fleet rollback use it alike: only ``step`` differs.

Ctrl-C, SIGTERM or SIGHUP of the controller during the rollout (``core.interrupts.deferred``): no new wave
starts; the host calls in flight are let finish (each host's own held cut-over), for up to
``IN_FLIGHT_SECONDS``, after which they are abandoned (each host's nextdeploy finishes on its own; the next
deploy or rollback converges the fleet); then every host that switched is put back as for a failure, and
``Interrupted`` is raised (exit 130) with a line saying what was put back. Another signal meanwhile is said
and changes nothing: the hosts are being put back (a SIGKILL stops the controller at once; the hosts stay
healthy, and the next deploy or rollback converges them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nextdeploy.core.errors import HostFailedError, Interrupted, NextdeployError, RollbackError, stopped_by
from nextdeploy.core.interrupts import Stops, deferred
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.parallel import MAX_PARALLEL
from nextdeploy.fleet.plan import (
    HostOutcome,
    Outcome,
    RolloutDecision,
    after_rollout,
    interrupted_message,
    nothing_switched_message,
    rollout_waves,
)
from nextdeploy.remote.errors import SshError

T = TypeVar("T")

IN_FLIGHT_SECONDS = 60.0  # after an interrupt: how long the host steps in flight are waited for
PUT_BACK_TIMEOUT = 600.0  # one host's put-back (its own held cut-over back), at most
POLL_SECONDS = 0.2  # how often the waits look for a stop signal


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
    prove_seconds: float | None = None  # a gated rollout's phase 1 (``fleet.gated``): every host proven

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "previous": self.previous, "waves": [list(wave) for wave in self.waves],
                "hosts": [run.to_json() for run in self.hosts.values()], "decision": self.decision.to_json(),
                "seconds": round(self.seconds, 3),
                "prove_seconds": None if self.prove_seconds is None else round(self.prove_seconds, 3)}


class RolloutFailed(Exception):
    """Raised by ``roll_out`` once the hosts were put back: the host's error (or the interrupt) and the
    whole result."""

    def __init__(self, error: NextdeployError | Interrupted, result: RolloutResult) -> None:
        super().__init__(error.message)
        self.error, self.result = error, result


@dataclass
class BeforeTheSwitch:
    """What a fleet command knows before any host is told to switch (``before_any_switch``)."""

    live: dict[str, str | None] | None = None  # what each host serves, once read
    over: bool = False  # the rollout ran: an interrupt after it is not said to have changed nothing


@contextmanager
def before_any_switch() -> Iterator[BeforeTheSwitch]:
    """Ctrl-C, SIGTERM or SIGHUP in the body (set-up, lock, config, read, build, ship, prepare) raises
    ``Interrupted`` saying that no host switched and what each host still serves (``state.live``, once the
    caller set it): exit 130. An interrupt that already says what it left (a convergence's, a rollout's: they
    defer the signals and act on them) goes through as it is, as does any after ``state.over`` is set."""
    state = BeforeTheSwitch()
    try:
        yield state
    except KeyboardInterrupt as interrupt:
        if state.over or (isinstance(interrupt, Interrupted) and interrupt.explained):
            raise
        name = stopped_by(interrupt)
        raise Interrupted(name, nothing_switched_message(name, state.live)) from None


def roll_out(session: Session, target: str, previous: str | None, step: Step, *, canary: int = 1,
             batch: int | str = 1, step_name: str = "activate",
             previous_of: Mapping[str, str | None] | None = None) -> RolloutResult:
    """Run ``step`` on every host, wave by wave, all or nothing (see the module's doc).

    ``previous_of``: what each host served before, when the hosts did not all serve ``previous`` (a host
    that switched is put back to its own release, never to another host's).

    Returns the result when every host passed. Otherwise puts back every host that switched and raises
    ``RolloutFailed`` carrying the first failing host's error (config order), or ``Interrupted`` when a stop
    signal came and no host failed, and the result; when a host cannot be put back, that error is a
    ``RollbackError`` naming it, the original failure in its details."""
    with deferred() as stops:
        return _roll_out(session, target, previous, step, stops, canary=canary, batch=batch,
                         step_name=step_name, previous_of=previous_of or {})


def _roll_out(session: Session, target: str, previous: str | None, step: Step, stops: Stops, *, canary: int,
              batch: int | str, step_name: str, previous_of: Mapping[str, str | None]) -> RolloutResult:
    started = time.monotonic()
    reporter = session.reporter
    waves = rollout_waves(session.names, canary, batch)
    runs: dict[str, HostRun] = {}
    errors: dict[str, NextdeployError] = {}
    for number, wave in enumerate(waves):
        if stops.first:
            break
        kind = "canary" if number == 0 and canary else f"batch {number + (0 if canary else 1)}"
        reporter.info(f"{kind}: {step_name} {target} on {', '.join(wave)}")
        for host, (run, error) in zip(wave, run_wave(wave, step, step_name, stops, reporter), strict=True):
            runs[host] = run
            if error is not None:
                errors[host] = error
            say_run(reporter, run, step_name)
        if errors:
            break
    return finish(session, target, previous, waves, runs, errors, stops, started, step_name, previous_of)


def finish(session: Session, target: str, previous: str | None, waves: tuple[tuple[str, ...], ...],
           runs: dict[str, HostRun], errors: Mapping[str, NextdeployError], stops: Stops, started: float,
           step_name: str, previous_of: Mapping[str, str | None]) -> RolloutResult:
    """The end of a rollout: ``plan.after_rollout`` decides on what each host did (``runs``; a host missing
    was not started), every host that switched is put back, and the failure (``errors``: each failed host's
    own) or the interrupt is raised in ``RolloutFailed``; the result is returned when every host switched."""
    reporter = session.reporter
    for host in session.names:
        runs.setdefault(host, HostRun(HostOutcome(host, Outcome.NOT_STARTED)))
    decision = after_rollout([runs[host].outcome for host in session.names], target, previous, stops.first)
    result = RolloutResult(target, previous, waves, runs, decision, 0.0)
    if decision.succeeded:
        result.seconds = time.monotonic() - started
        return result
    problem = put_back(session, decision, runs, previous_of, stops)
    for host in decision.unknown:
        lost = "still at it when abandoned" if runs[host].outcome.outcome is Outcome.ABANDONED else "lost"
        reporter.warn(f"{host} was {lost} during {step_name}: its state is read and converged by the next deploy "
                      "or rollback")
    result.seconds = time.monotonic() - started
    if problem is not None:
        raise RolloutFailed(problem, result)
    if decision.failure is not None:
        raise RolloutFailed(errors[decision.failure.host], result)
    before = {host: previous_of.get(host, previous) for host in session.names}
    raise RolloutFailed(Interrupted(str(stops.first), interrupted_message(decision, before)), result)


def run_wave(wave: Sequence[str], step: Step, step_name: str, stops: Stops, reporter: Reporter,
             then: str = "then the hosts that switched are put back") -> list[tuple[HostRun, NextdeployError | None]]:
    """``step`` on the wave's hosts at once; after a stop signal, the steps still running are waited for up
    to ``IN_FLIGHT_SECONDS`` (said, with what comes ``then``), then abandoned (``Outcome.ABANDONED``)."""
    began = time.monotonic()

    def one(host: str) -> tuple[HostRun, NextdeployError | None]:
        return attempt(host, step, step_name, began)

    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(wave))), thread_name_prefix="wave")
    try:
        futures = {host: pool.submit(one, host) for host in wave}
        waited = wait_through_stops(list(futures.values()), stops, reporter, IN_FLIGHT_SECONDS,
                                    lambda: f"waiting for {', '.join(h for h, f in futures.items() if not f.done())} "
                                            f"to finish {step_name} (at most {IN_FLIGHT_SECONDS:g} s), {then}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # an abandoned step's thread is not waited for
    if not waited:
        reporter.warn(f"stopped waiting for {', '.join(h for h, f in futures.items() if not f.done())} after "
                      f"{IN_FLIGHT_SECONDS:g} s")
    return [futures[host].result() if futures[host].done() else
            (HostRun(HostOutcome(host, Outcome.ABANDONED, step_name, "abandoned at the interrupt"),
                     time.monotonic() - began), None)
            for host in wave]


def attempt(host: str, step: Step, step_name: str, began: float,
            lost_step: str | None = "") -> tuple[HostRun, NextdeployError | None]:
    """``step(host)``, and what it did: SWITCHED with its answer, or FAILED / UNREACHABLE with its error.
    ``lost_step``: the step a host lost meanwhile is said to be at ("": ``step_name``; None: none, it cannot
    have switched)."""
    try:
        answer = step(host)
    except SshError as error:  # lost during the step: it may have switched
        at = step_name if lost_step == "" else lost_step
        return HostRun(HostOutcome(host, Outcome.UNREACHABLE, at, error.message), time.monotonic() - began), error
    except HostFailedError as error:  # its own failure path put its previous release back
        said = error.message.removeprefix(f"{host} failed at {error.step}: ")
        return HostRun(HostOutcome(host, Outcome.FAILED, error.step, said), time.monotonic() - began), error
    except NextdeployError as error:
        outcome = HostOutcome(host, Outcome.FAILED, step_name, error.message)
        return HostRun(outcome, time.monotonic() - began), error
    return HostRun(HostOutcome(host, Outcome.SWITCHED), time.monotonic() - began, answer), None


def wait_through_stops(futures: Sequence[Future[T]], stops: Stops, reporter: Reporter, after_stop: float | None,
                       doing: Callable[[], str]) -> bool:
    """Wait for every one of ``futures``, saying each stop signal as it comes (with what is being waited
    for: ``doing()``); ``after_stop``: how long to wait on after the first signal (None: to the end). True
    when all are done, False when the time after a stop ran out."""
    deadline = None if not stops.signals or after_stop is None else time.monotonic() + after_stop
    while True:
        pending = [future for future in futures if not future.done()]
        if not pending:
            return True
        if len(stops.signals) > stops.said:
            again = " again" if stops.said else ""
            stops.said = len(stops.signals)
            reporter.warn(f"{stops.signals[-1]}{again}: no new wave starts; {doing()} (SIGKILL stops nextdeploy "
                          "at once: every host stays healthy, and the next deploy or rollback converges the fleet)")
            if deadline is None and after_stop is not None:
                deadline = time.monotonic() + after_stop
        if deadline is not None and time.monotonic() >= deadline:
            return False
        wait(pending, timeout=POLL_SECONDS)


def say_run(reporter: Reporter, run: HostRun, step_name: str) -> None:
    host, outcome = run.outcome.host, run.outcome.outcome
    if outcome is Outcome.SWITCHED:
        reporter.info(f"ok {host}: {step_name} ({run.seconds:.1f} s)")
    else:
        reporter.info(f"FAILED {host}: {run.outcome.step or step_name}: {run.outcome.error} ({run.seconds:.1f} s)")


def put_back_argv(previous: str | None) -> list[str]:
    """The host command that puts a switched host back: the previous release, or none (a first deploy)."""
    return ["rollback", "--to", previous] if previous else ["stop"]


def put_back(session: Session, decision: RolloutDecision, runs: dict[str, HostRun],
             previous_of: Mapping[str, str | None] | None = None, stops: Stops | None = None) -> NextdeployError | None:
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
            session.call(host, put_back_argv(before[host]), timeout=PUT_BACK_TIMEOUT)
        except NextdeployError as error:
            lost[host] = error
            reporter.info(f"FAILED {host}: put back: {error.message}")
            return
        runs[host].put_back = True
        reporter.info(f"ok {host}: put back to {before[host] or 'nothing'} ({time.monotonic() - began:.1f} s)")

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts)), thread_name_prefix="putback") as pool:
        futures = [pool.submit(one, host) for host in hosts]
        wait_through_stops(futures, stops or Stops(), reporter, None,
                           lambda: f"still putting {', '.join(hosts)} back to {decision.previous or 'nothing'}")
    for future in futures:
        future.result()  # a bug in ``one`` is raised, not lost
    if not lost:
        return None
    first = next(iter(lost.values()))
    return RollbackError(
        f"{decision.message()}; and {', '.join(lost)} could not be put back to {decision.previous or 'nothing'}: "
        f"{first.message}",
        hint="run `nextdeploy rollback` once the hosts answer: it converges every host",
        details=[f"{host}: {error.message}" for host, error in lost.items()])
