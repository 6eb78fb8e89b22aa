"""Crash convergence: a fleet found on mixed releases is put back on one before anything else changes it.

A controller killed mid-rollout (SIGKILL, a closed laptop, a cancelled CI job) leaves every host serving a
healthy release, but maybe not the same one: the canary on the new release, the others on the old. The
next ``deploy`` or ``rollback`` reads every host's live release and usable releases (``host releases``),
and if they differ says so and moves the others to the release ``plan.convergence`` picks (the newest one
live somewhere that every host can serve: the interrupted rollout's, which passed its checks on the hosts
that switched), with each host's own zero-downtime activation, canary first then by batches. A host it
cannot reach stops it (exit 19): guessing what that host serves could leave the fleet mixed for good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nextdeploy.core.errors import Interrupted, ReleaseError
from nextdeploy.core.interrupts import deferred
from nextdeploy.core.steps import StepName
from nextdeploy.fleet.plan import HostStatus, Outcome, convergence, rollout_waves
from nextdeploy.fleet.rollout import run_wave
from nextdeploy.fleet.session import FleetSession


def status_of(host: str, answer: Mapping[str, Any]) -> HostStatus:
    """A host's ``host releases`` answer as the plan's ``HostStatus``."""
    return HostStatus(host, True, answer.get("current"), tuple(str(release) for release in answer.get("usable", ())))


def live_line(statuses: Sequence[HostStatus]) -> str:
    """``web1 r2, web2 r1, web3 none``: every host's live release, in config order."""
    return ", ".join(f"{status.host} {status.live or 'none'}" if status.reachable else f"{status.host} unreachable"
                     for status in statuses)


def read_statuses(session: FleetSession) -> tuple[list[HostStatus], dict[str, dict[str, Any]]]:
    """Every host's live and usable releases, and its ``host releases`` answer; the first host's error
    (config order) is raised if any cannot answer (SshError: exit 19)."""
    answers = session.call_each(["releases"])
    return [status_of(host, answers[host]) for host in session.names], answers


def converge_if_mixed(session: FleetSession, read: list[HostStatus] | None = None) -> list[HostStatus]:
    """If the hosts serve different releases, say so and activate one release on every host. Hosts serving
    nothing yet (new in the fleet) are left to the deploy. ``read``: every host's status, when the caller
    has just read it (``read_statuses``). Returns every host's status after."""
    return converge(session, read)[0]


def converge(session: FleetSession, read: list[HostStatus] | None = None) -> tuple[list[HostStatus], tuple[str, ...]]:
    """``converge_if_mixed``, and the hosts it moved."""
    statuses = read if read is not None else read_statuses(session)[0]
    serving = [status for status in statuses if status.live]
    plan = convergence(serving)
    if plan.converged or not serving:
        return statuses, ()
    say = session.reporter.info
    say(f"the fleet is on mixed releases: {live_line(statuses)}")
    if plan.target is None:
        raise ReleaseError(f"the fleet is on mixed releases ({live_line(statuses)}) and no release they serve "
                           "is complete on every host",
                           hint="deploy again (it ships the release to every host), or `nextdeploy rollback "
                                "--to ID` with an id every host has (`nextdeploy releases`)")
    say(f"converging {', '.join(plan.move)} to {plan.target}")
    moved, abandoned, stopped = _move(session, plan.target, [host for host in session.names if host in plan.move])
    if stopped:
        raise Interrupted(stopped, stopped_converging(stopped, plan.target, statuses, moved, abandoned))
    say(f"every host serves {plan.target}")
    return [HostStatus(status.host, True, plan.target if status.host in plan.move else status.live, status.ready)
            for status in statuses], plan.move


def _move(session: FleetSession, target: str, hosts: list[str]) -> tuple[list[str], list[str], str | None]:
    """``host activate <target>`` on ``hosts``, canary first then by batches: the hosts moved, those abandoned,
    and the stop signal received. Ctrl-C, SIGTERM or SIGHUP meanwhile (``core.interrupts.deferred``): no new
    wave starts, the wave in flight is let finish (each host's own zero-downtime activation; abandoned after
    ``rollout.IN_FLIGHT_SECONDS``). Every host moved serves a release that was live before: the fleet is never
    more mixed than it was found. A host failing raises its error (the first, config order)."""
    config = session.config
    moved: list[str] = []
    abandoned: list[str] = []
    with deferred() as stops:
        for wave in rollout_waves(hosts, config.rollout.canary, config.rollout.batch):
            if stops.first:
                break
            with session.reporter.step(f"activate {target} on {', '.join(wave)}", StepName.CONVERGE):
                runs = run_wave(wave, lambda host: session.call(host, ["activate", target]), "activate", stops,
                                session.reporter, then=f"then nextdeploy stops (the hosts moved stay on {target})")
            errors = [error for _run, error in runs if error is not None]
            moved += [run.outcome.host for run, error in runs if run.outcome.outcome is Outcome.SWITCHED]
            abandoned += [run.outcome.host for run, _ in runs if run.outcome.outcome is Outcome.ABANDONED]
            if errors:
                raise errors[0]
    return moved, abandoned, stops.first


def stopped_converging(signal_name: str, target: str, statuses: Sequence[HostStatus], moved: Sequence[str],
                       abandoned: Sequence[str]) -> str:
    """The one line of a convergence stopped by a signal: what is live where."""
    said = f"interrupted by {signal_name} while converging the fleet to {target}: "
    now = [HostStatus(status.host, True, target if status.host in moved else status.live) for status in statuses
           if status.host not in abandoned]
    if not abandoned and all(status.live in (target, None) for status in now):
        what = f"every host serves {target}" if all(status.live == target for status in now) else live_line(now)
        return said + f"converged ({what}); nothing else changed"
    said += live_line(now)
    if abandoned:
        said += f"; {', '.join(abandoned)} still moving to {target} when abandoned (its own nextdeploy finishes it)"
    return said + "; the next deploy or rollback converges the rest"
