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

from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.steps import StepName
from nextdeploy.fleet.plan import HostStatus, convergence, rollout_waves
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
    config = session.config
    say(f"converging {', '.join(plan.move)} to {plan.target}")
    for wave in rollout_waves([host for host in session.names if host in plan.move], config.rollout.canary,
                              config.rollout.batch):
        with session.reporter.step(f"activate {plan.target} on {', '.join(wave)}", StepName.CONVERGE):
            session.call_each(["activate", plan.target], wave)
    say(f"every host serves {plan.target}")
    return [HostStatus(status.host, True, plan.target if status.host in plan.move else status.live, status.ready)
            for status in statuses], plan.move
