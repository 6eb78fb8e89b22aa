"""A deploy's rollout in two phases: the release proven on EVERY host before ANY host switches.

    phase 1  ``host activate <id> --gate`` on every host at once: each boots the release's workers held off
             its public port, through the stability window (or its preflight), then waits at its gate
             (``activation.gate``), nothing switched. A host failing here (its release rejected in its
             window, lost): every other host is told ``abort``, nothing switched anywhere, and its error
             is raised.
    phase 2  ``go`` to the canary's hosts, their answers (cut over, verified), then to each batch
             (``plan.rollout_waves``): the waves only switch, in well under a second each. A host failing
             here: as ``fleet.rollout`` (every host that switched is put back), the hosts not yet told
             ``go`` are told ``abort``.

Ctrl-C, SIGTERM, SIGHUP (``core.interrupts.deferred``): in phase 1 every host is told ``abort`` at once; in
phase 2 the wave in flight is let finish as in ``fleet.rollout``, the others are aborted, and the hosts
that switched are put back. A controller killed outright closes every host's stdin: each gate sees the end
of its input and rejects the release (nothing switched), or its cut-over goes on if it was told ``go``.

The end is ``rollout.finish``: ``plan.after_rollout`` decides (a proven or aborted host never switched:
untouched), the switched hosts are put back, the failure raised. A fleet rollback runs ``fleet.rollout``
alone (one ``host rollback`` per host, no gate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from nextdeploy.core.errors import ExitCode, HostFailedError, NextdeployError
from nextdeploy.core.interrupts import Stops, deferred
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.parallel import MAX_PARALLEL
from nextdeploy.fleet.plan import HostOutcome, Outcome, rollout_waves
from nextdeploy.fleet.rollout import (
    POLL_SECONDS,
    HostRun,
    RolloutResult,
    Session,
    attempt,
    finish,
    run_wave,
    say_run,
)

STEP = "activate"


class GatedStep(Protocol):
    """One host's ``host activate --gate`` in flight (``hostcall.GatedCall``)."""

    def proven(self) -> bool: ...

    def go(self) -> None: ...

    def abort(self) -> None: ...

    def answer(self) -> dict[str, Any]: ...


Start = Callable[[str], GatedStep]


def roll_out_gated(session: Session, target: str, previous: str | None, start: Start, *, canary: int = 1,
                   batch: int | str = 1, previous_of: Mapping[str, str | None] | None = None) -> RolloutResult:
    """Prove ``target`` on every host (``start(host)``), then switch them wave by wave (see the module's
    doc). Returns or raises as ``rollout.roll_out``."""
    with deferred() as stops:
        started = time.monotonic()
        reporter = session.reporter
        waves = rollout_waves(session.names, canary, batch)
        gates = _Gates(start, reporter)
        reporter.info(f"prove {target} on {', '.join(session.names)} at once (nothing switches until every "
                      "host is ready)")
        runs, errors = gates.prove(session.names, stops)
        proving = time.monotonic() - started
        for number, wave in enumerate(waves):
            if errors or stops.first:
                break
            kind = "canary" if number == 0 and canary else f"batch {number + (0 if canary else 1)}"
            reporter.info(f"{kind}: switch {target} on {', '.join(wave)}")
            for host, (run, error) in zip(wave, run_wave(wave, gates.switch, STEP, stops, reporter), strict=True):
                runs[host] = run
                if error is not None:
                    errors[host] = error
                say_run(reporter, run, STEP)
        gates.abort_waiting(runs, errors)
        result = finish(session, target, previous, waves, runs, errors, stops, started, STEP, previous_of or {})
        result.prove_seconds = proving
        return result


class _Gates:
    """Every host's gated call, and the word each gets."""

    def __init__(self, start: Start, reporter: Reporter) -> None:
        self.start, self.reporter = start, reporter
        self.calls: dict[str, GatedStep] = {}
        self.aborting = False
        self.lock = threading.Lock()

    def prove(self, hosts: Sequence[str], stops: Stops) -> tuple[dict[str, HostRun], dict[str, NextdeployError]]:
        """Phase 1: every host's call started at once and waited for until it is proven (or ended). The
        first failure, or a stop signal, aborts them all."""
        began = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(hosts))), thread_name_prefix="prove")
        try:
            futures = {host: pool.submit(self._prove_one, host, began) for host in hosts}
            said = 0
            while True:
                failed = [host for host, future in futures.items() if future.done() and future.result()[1]]
                if len(stops.signals) > said:
                    said = len(stops.signals)
                    self.reporter.warn(f"{stops.signals[-1]}: aborting the rollout before any host switched")
                if (failed or stops.first) and not self.aborting:
                    self.abort_all()
                pending = [future for future in futures.values() if not future.done()]
                if not pending:
                    break
                wait(pending, timeout=POLL_SECONDS)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        runs: dict[str, HostRun] = {}
        errors: dict[str, NextdeployError] = {}
        for host, future in futures.items():
            run, error = _aborted_if_told(future, self.aborting)
            runs[host] = run
            if error is not None:
                errors[host] = error
            self._say(run)
        return runs, errors

    def _prove_one(self, host: str, began: float) -> tuple[HostRun, NextdeployError | None]:
        with self.lock:
            if self.aborting:
                return HostRun(HostOutcome(host, Outcome.NOT_STARTED)), None
        proven: list[bool] = []

        def step(host: str) -> dict[str, Any]:
            call = self.start(host)
            with self.lock:
                self.calls[host] = call
                if self.aborting:
                    call.abort()
            if call.proven():
                proven.append(True)
                return {}
            return call.answer()  # ended before its gate: live already, or failed

        run, error = attempt(host, step, STEP, began, lost_step=None)  # lost before `go`: it cannot switch
        if proven and error is None:
            run.outcome = HostOutcome(host, Outcome.PROVEN)
        return run, error

    def abort_all(self) -> None:
        with self.lock:
            self.aborting = True
            calls = list(self.calls.values())
        for call in calls:
            call.abort()

    def switch(self, host: str) -> dict[str, Any]:
        """Phase 2, one host: ``go``, and its answer (cut over, verified)."""
        call = self.calls[host]
        call.go()
        return call.answer()

    def abort_waiting(self, runs: dict[str, HostRun], errors: dict[str, NextdeployError]) -> None:
        """Every host still at its gate is told ``abort``; its answer waited for (its held workers deleted)."""
        waiting = [host for host, run in runs.items() if run.outcome.outcome is Outcome.PROVEN]
        if not waiting:
            return
        self.abort_all()
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(waiting)), thread_name_prefix="abort") as pool:
            futures = {host: pool.submit(attempt, host, lambda h: self.calls[h].answer(), STEP, began, None)
                       for host in waiting}
        for host, future in futures.items():
            run, error = _aborted_if_told(future, True)
            runs[host] = run
            if error is not None:
                errors[host] = error
            self._say(run)

    def _say(self, run: HostRun) -> None:
        host, outcome = run.outcome.host, run.outcome.outcome
        if outcome is Outcome.PROVEN:
            self.reporter.info(f"ready {host}: proven, waits at its gate ({run.seconds:.1f} s)")
        elif outcome is Outcome.ABORTED:
            self.reporter.info(f"aborted {host}: its held workers deleted, nothing switched ({run.seconds:.1f} s)")
        elif outcome is not Outcome.NOT_STARTED:
            say_run(self.reporter, run, STEP)


def _aborted_if_told(future: Future[tuple[HostRun, NextdeployError | None]],
                     told: bool) -> tuple[HostRun, NextdeployError | None]:
    """A host's run; one that answered GateAborted (exit 21) after it was told ``abort`` is ABORTED, no error."""
    run, error = future.result()
    if told and isinstance(error, HostFailedError) and error.exit_code is ExitCode.ABORTED:
        return HostRun(HostOutcome(run.outcome.host, Outcome.ABORTED, STEP), run.seconds), None
    return run, error
