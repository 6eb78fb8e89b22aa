"""``nextdeploy deploy`` with ``[[hosts]]``: build once here, ship, prepare every host, then canary and batches,
all or nothing.

    set up the hosts (``fleet.setup``: its fast path when they are)        nothing changed on failure
    [fleet lock, taken before anything is sent: a refused deploy changes nothing]
    send the config; converge a fleet found on mixed versions (``fleet.converge``)
    read every host's status (reachable? live release?)
    decide the Server Actions key (the hosts'), build ONCE on this machine in [build] dir with it
    ship to every host at once (delta), give the key, ``host prepare`` every host   nothing live changed yet
    ``roll_out_gated``: ``host activate <id> --gate`` on every host at once, each proven up to its cut-over
    (nothing switched; a failure aborts all), then ``go`` to the canary, then batches; any failure puts
    every switched host back (``fleet.gated``, ``fleet.rollout``) and exits with the failing host's error
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nextdeploy.activation.gate import GATE_TIMEOUT
from nextdeploy.core.config import Config
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.build import build_once, controller_context, controller_key, drop_older
from nextdeploy.fleet.converge import converge_if_mixed
from nextdeploy.fleet.gated import roll_out_gated
from nextdeploy.fleet.lock import fleet_lock
from nextdeploy.fleet.prepare import decide_key, give_key
from nextdeploy.fleet.rollout import RolloutFailed, RolloutResult
from nextdeploy.fleet.session import FleetSession, fleet_session
from nextdeploy.fleet.setup import setup_fleet
from nextdeploy.fleet.ship import ShipResult, ship

ACTIVATE_TIMEOUT = 900.0  # seconds for one host's `host activate` (the held cut-over, verify, retention), not
# counting its wait at the gate (at most GATE_TIMEOUT)
PREPARE_TIMEOUT = 300.0


@dataclass
class FleetDeployResult:
    release: str
    previous: str | None
    seconds: float
    build_seconds: float
    shipped: dict[str, ShipResult]
    rollout: RolloutResult | None
    failed: str | None = None  # the message of the failure, when the deploy failed
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        hosts = {run["host"]: run for run in (self.rollout.to_json()["hosts"] if self.rollout else [])}
        return {
            "release": self.release,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
            "build_seconds": round(self.build_seconds, 3),
            "failed": self.failed,
            "hosts": [{**hosts.get(name, {"host": name}), "ship": shipped.to_json()}
                      for name, shipped in self.shipped.items()],
            "ship_bytes": sum(shipped.bytes_sent for shipped in self.shipped.values()),
            "waves": [list(wave) for wave in self.rollout.waves] if self.rollout else [],
            "prove_seconds": self.rollout.to_json()["prove_seconds"] if self.rollout else None,
        }


def fleet_previous(statuses: dict[str, dict[str, Any]]) -> str | None:
    """The release the fleet serves before this deploy: the one its hosts serve (the most common one when
    they differ: a mixed fleet is converged first, ``converge_if_mixed``)."""
    serving = Counter(status.get("current") for status in statuses.values())
    return serving.most_common(1)[0][0] if serving else None


def fleet_deploy(config: Config, config_text: bytes, reporter: Reporter,
                 lock_timeout: float = 0.0) -> FleetDeployResult:
    """Deploy to every ``[[hosts]]`` entry (see the module's doc). Raises the failing host's error
    (``HostFailedError``: host, step, its exit code), after every switched host was put back."""
    started = time.monotonic()
    with fleet_session(config, reporter) as session:
        with reporter.step(f"set up {len(session.names)} host(s): nextdeploy and pm2 (already set up: a check)",
                           StepName.FLEET_SETUP):
            setup_fleet(config, session.transport, reporter.info)
        # The lock first (exit 12 when another deploy or rollback holds it, after --lock-timeout): a refused
        # controller must not overwrite the config the holder's hosts run with.
        with fleet_lock(session, "deploy", lock_timeout):
            with reporter.step("send the config to every host", StepName.FLEET_CONFIG):
                session.send_config(config_text)
            converge_if_mixed(session)  # a fleet left mixed (a controller killed) first
            return _deploy_locked(session, config, reporter, started)


def _deploy_locked(session: FleetSession, config: Config, reporter: Reporter, started: float) -> FleetDeployResult:
    with reporter.step("read every host's status", StepName.FLEET_STATUS):
        statuses = session.call_each(["status"])
    previous = fleet_previous(statuses)
    reporter.info("live: " + ", ".join(f"{host} {statuses[host].get('current') or 'none'}" for host in session.names))
    key, choice = decide_key(session.transport, session.roots, config.security.server_actions_key,
                             controller_key(config))
    ctx = controller_context(config, reporter)
    build_started = time.monotonic()
    built = build_once(ctx, key)
    build_seconds = time.monotonic() - build_started
    release = built.release.id
    try:
        with reporter.step(f"ship {release} to {len(session.names)} host(s) (delta against each live release)",
                           StepName.FLEET_SHIP):
            shipped = ship(session.transport, session.roots, built.release_dir, on_done=lambda result: reporter.info(
                f"  {result.host}: {result.bytes_sent / 1e6:.1f} MB sent of {result.release_bytes / 1e6:.1f} MB "
                f"({result.sent_fraction:.1%}) in {result.seconds:.1f} s"))
    finally:
        if built.release.cleanup is not None:
            built.release.cleanup.join()
    with reporter.step(f"prepare {release} on every host (Server Actions key, shared links, checks)",
                       StepName.FLEET_PREPARE):
        give_key(session.transport, session.roots, key, choice)
        session.call_each(["prepare", release], timeout=PREPARE_TIMEOUT)
    drop_older(ctx, release)
    result = FleetDeployResult(release, previous, 0.0, build_seconds, shipped, None)
    try:
        result.rollout = roll_out_gated(
            session, release, previous,
            lambda host: session.start_gated(host, release, timeout=ACTIVATE_TIMEOUT + GATE_TIMEOUT),
            canary=config.rollout.canary, batch=config.rollout.batch,
            previous_of={host: statuses[host].get("current") for host in session.names})
    except RolloutFailed as failed:
        result.rollout, result.failed = failed.result, failed.error.message
        result.seconds = time.monotonic() - started
        reporter.result({**result.to_json(), "steps": reporter.steps_json()})
        raise failed.error from None
    result.seconds = time.monotonic() - started
    return result

