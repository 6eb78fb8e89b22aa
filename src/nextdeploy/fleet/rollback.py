"""``nextdeploy rollback`` on a fleet: every host back to the same earlier release, all or nothing.

Under the fleet lock, a fleet found on mixed releases is converged first (``fleet.converge``). The target is
``--to ID`` (complete and never failed on every host), or by default the fleet's previous good release:
the one every host's own rollback would pick when they agree, else the newest release created before the
live one that is good on every host. Hosts switch with the deploy's wave engine (``fleet.rollout``): canary
first, then by batches, each with its own zero-downtime rollback (``host rollback --to ID``). If a host
fails, the hosts that switched are put back on the release the fleet served (in parallel), the others are
left untouched, and the error names the host.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nextdeploy.core.config import Config
from nextdeploy.core.errors import ReleaseNotFoundError, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.converge import converge, read_statuses
from nextdeploy.fleet.rollout import BeforeTheSwitch, RolloutFailed, before_any_switch, roll_out
from nextdeploy.fleet.session import FleetSession

GOOD = "active"  # the release log's status of a release that went live and never failed


def fleet_rollback_target(answers: Mapping[str, Mapping[str, Any]], live: str | None, to: str | None) -> str:
    """The release every host goes back to (pure). ``answers``: each host's ``host releases`` answer.
    Raises ReleaseNotFoundError or RollbackError, naming the hosts, when there is none."""
    if to is not None:
        lacking = [host for host, answer in answers.items() if to not in answer.get("usable", ())]
        if lacking:
            raise ReleaseNotFoundError(f"release {to} is not complete (or failed) on {', '.join(lacking)}",
                                       hint="pick an id that every host has: `nextdeploy releases`")
        if live == to:
            raise RollbackError(f"release {to} is already live on every host",
                                hint="pick another id from `nextdeploy releases`")
        return to
    own = {answer.get("rollback_target") for answer in answers.values()}
    if len(own) == 1 and None not in own:
        return str(own.pop())
    good_everywhere = set.intersection(*({row["id"] for row in answer.get("releases", ()) if row["status"] == GOOD}
                                         for answer in answers.values())) if answers else set()
    older = sorted((release for release in good_everywhere if live is None or release < live), reverse=True)
    if not older:
        raise RollbackError("there is no earlier good release on every host to roll back to",
                            hint="see `nextdeploy releases`; `nextdeploy rollback --to ID` with an id every "
                                 "host has")
    return str(older[0])


@dataclass(frozen=True)
class FleetRollbackResult:
    release: str
    previous: str | None
    hosts: tuple[str, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "previous": self.previous, "hosts": list(self.hosts),
                "seconds": round(self.seconds, 3)}


def fleet_rollback(session: FleetSession, to: str | None,
                   before: BeforeTheSwitch | None = None) -> FleetRollbackResult:
    """Every host to ``to`` (or the fleet's previous good release); the caller holds the fleet lock.
    ``before``: told what every host serves, and when the rollout is over (``rollout.before_any_switch``)."""
    started = time.monotonic()
    before = before or BeforeTheSwitch()
    _, moved = converge(session)
    statuses, answers = read_statuses(session)
    before.live = {status.host: status.live for status in statuses}
    live = statuses[0].live if statuses else None
    if to is not None and to == live and moved:  # the fleet was mixed, and converging put it on ``to``
        return FleetRollbackResult(to, None, tuple(session.names), time.monotonic() - started)
    target = fleet_rollback_target(answers, live, to)
    session.reporter.info(f"rolling back every host from {live or 'none'} to {target}")
    config = session.config
    try:
        roll_out(session, target, live, lambda host: session.call(host, ["rollback", "--to", target]),
                 canary=config.rollout.canary, batch=config.rollout.batch, step_name="rollback")
        before.over = True
    except RolloutFailed as failed:
        raise failed.error from None
    return FleetRollbackResult(target, live, tuple(session.names), time.monotonic() - started)


def run_fleet_rollback(config: Config, config_text: bytes, reporter: Reporter, to: str | None,
                       lock_timeout: float = 0.0) -> FleetRollbackResult:
    from nextdeploy.fleet.commands import locked_fleet

    with before_any_switch() as before, locked_fleet(config, config_text, reporter, "rollback",
                                                      lock_timeout) as session:
        return fleet_rollback(session, to, before)
