"""``nextdeploy deploy`` with ``[[hosts]]``: build once here, ship, prepare every host, then canary and batches,
all or nothing.

    [fleet lock, taken before anything is sent: a refused deploy changes nothing; the first host's, then
    the others' at once; each host's nextdeploy of this version and code answers its facts with it]
    set up the hosts (``fleet.setup``): on a fleet set up, a check of those facts   nothing changed on failure
    (a host not set up, or on another version or code: no lock kept; set up, then the lock taken)
    send the config (to a build box too); read every host's live releases and its key file at once
    converge a fleet found on mixed versions (``fleet.converge``)
    decide the Server Actions key (the hosts'), build ONCE on this machine in [build] dir with it, or on the
    [build] host (``fleet.buildhost``: the source sent there, built, pulled here for the other hosts)
    ship to every host at once (delta; not to the build host), give the key, ``host prepare`` every host
                                                                            nothing live changed yet
    ``roll_out_gated``: ``host activate <id> --gate`` on every host at once, each proven up to its cut-over
    (nothing switched; a failure aborts all), then ``go`` to the canary, then batches; any failure puts
    every switched host back (``fleet.gated``, ``fleet.rollout``) and exits with the failing host's error
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.activation.gate import GATE_TIMEOUT
from nextdeploy.core.config import Config
from nextdeploy.core.context import Context
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.build import build_once, controller_context, controller_key, drop_older
from nextdeploy.fleet.buildhost import RemoteBuild, build_on_host, check_source, other_hosts
from nextdeploy.fleet.converge import converge_if_mixed, read_statuses
from nextdeploy.fleet.gated import roll_out_gated
from nextdeploy.fleet.lock import NotSetUp, fleet_lock
from nextdeploy.fleet.plan import HostStatus
from nextdeploy.fleet.prepare import HostKey, decide_key, give_key, read_host_keys
from nextdeploy.fleet.rollout import BeforeTheSwitch, RolloutFailed, RolloutResult, before_any_switch
from nextdeploy.fleet.session import FleetSession, fleet_session
from nextdeploy.fleet.setup import machine_roots, setup_fleet
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
    hosts: list[str] = field(default_factory=list)  # every host, in config order (the build host is not shipped to)
    built_on: RemoteBuild | None = None  # the [build] host's build; None: built on this machine

    def to_json(self) -> dict[str, Any]:
        hosts = {run["host"]: run for run in (self.rollout.to_json()["hosts"] if self.rollout else [])}
        return {
            "release": self.release,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
            "build_seconds": round(self.build_seconds, 3),
            "failed": self.failed,
            "build": self.built_on.to_json() if self.built_on else {"host": None},
            "hosts": [{**hosts.get(name, {"host": name}),
                       "ship": self.shipped[name].to_json() if name in self.shipped else None}
                      for name in self.hosts or self.shipped],
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
    if config.build.host is not None:
        check_source(config)  # a source the build host cannot get is refused before any host is contacted
    with before_any_switch() as before, fleet_session(config, reporter) as session, ExitStack() as locked:
        machines = machine_roots(config)  # the hosts and a build box
        set_up_and_lock(session, config, reporter, lock_timeout, locked, machines)
        with reporter.step("send the config to every host", StepName.FLEET_CONFIG):
            session.send_config(config_text, machines)
        return _deploy_locked(session, config, reporter, started, before)


def set_up_and_lock(session: FleetSession, config: Config, reporter: Reporter, lock_timeout: float,
                    locked: ExitStack, machines: dict[str, str]) -> None:
    """Every machine (the hosts and a build box) set up (``fleet.setup``), then its fleet lock held in
    ``locked``, before the config is sent (exit 12 when another deploy or rollback holds it, after
    --lock-timeout: a refused controller must not overwrite the config the holder's hosts run with; a build
    box's too: another fleet building there in the same root would have its config and source overwritten
    mid-build). The lock is asked first, of each machine's nextdeploy of this version and code, with its
    facts: on a fleet set up, that one call per machine is also the set-up check. A machine not set up so:
    no lock is kept, the machines are set up (nothing changed before their checks pass), then locked."""
    facts: dict[str, dict[str, Any]] | None = {}
    try:
        locked.enter_context(fleet_lock(session, "deploy", lock_timeout, facts=facts, machines=machines))
    except NotSetUp:
        facts = None
    with reporter.step(f"set up {len(session.names)} host(s): nextdeploy and pm2 (already set up: a check)",
                       StepName.FLEET_SETUP):
        setup_fleet(config, session.transport, reporter.info, known=facts)
    if facts is None:
        locked.enter_context(fleet_lock(session, "deploy", lock_timeout, machines=machines))


def _build(session: FleetSession, config: Config, key: str, ctx: Context,
           reporter: Reporter) -> tuple[str, Path | None, threading.Thread | None, RemoteBuild | None]:
    """The release: its id, the controller's copy to ship (None: nothing to ship), the removal of its build
    dir still running, and the [build] host's build (None: built here)."""
    if config.build.host is None:
        built = build_once(ctx, key)
        return built.release.id, built.release_dir, built.release.cleanup, None
    with reporter.step(f"build the release on {config.build.host} (the [build] host), pull it here for the others",
                       StepName.FLEET_BUILD):
        remote = build_on_host(session.transport, config, machine_roots(config), key, ctx, reporter)
    return remote.release, remote.release_dir, None, remote


def read_fleet_state(session: FleetSession) -> tuple[list[HostStatus], list[HostKey]]:
    """Every host's live and usable releases (``host releases``) and its Server Actions key file, read at
    once: two reads per host side by side, changing nothing."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keys") as pool:
        keys = pool.submit(read_host_keys, session.transport, session.roots)
        statuses, _ = read_statuses(session)
        return statuses, keys.result()


def _deploy_locked(session: FleetSession, config: Config, reporter: Reporter, started: float,
                   before: BeforeTheSwitch) -> FleetDeployResult:
    with reporter.step("read every host's releases and Server Actions key", StepName.FLEET_STATUS):
        read, found = read_fleet_state(session)
    before.live = {status.host: status.live for status in read}
    live = {status.host: status.live for status in converge_if_mixed(session, read)}  # a mixed fleet first
    before.live = live
    previous = fleet_previous({host: {"current": release} for host, release in live.items()})
    reporter.info("live: " + ", ".join(f"{host} {live[host] or 'none'}" for host in session.names))
    key, choice = decide_key(session.transport, session.roots, config.security.server_actions_key,
                             controller_key(config), found)
    ctx = controller_context(config, reporter)
    build_started = time.monotonic()
    release, release_dir, cleanup, built_on = _build(session, config, key, ctx, reporter)
    build_seconds = time.monotonic() - build_started
    targets = session.roots if built_on is None else other_hosts(session.roots, built_on.host)
    shipped: dict[str, ShipResult] = {}
    try:
        if targets and release_dir is not None:
            with reporter.step(f"ship {release} to {len(targets)} host(s) (delta against each live release)",
                               StepName.FLEET_SHIP):
                shipped = ship(session.transport, targets, release_dir, on_done=lambda result: reporter.info(
                    f"  {result.host}: {result.bytes_sent / 1e6:.1f} MB sent of {result.release_bytes / 1e6:.1f} MB "
                    f"({result.sent_fraction:.1%}) in {result.seconds:.1f} s"))
    finally:
        if cleanup is not None:
            cleanup.join()
    with reporter.step(f"prepare {release} on every host (Server Actions key, shared links, checks)",
                       StepName.FLEET_PREPARE):
        give_key(session.transport, session.roots, key, choice)
        session.call_each(["prepare", release], timeout=PREPARE_TIMEOUT)
    sweeping = drop_older(ctx, release)[1] if release_dir is not None else None  # deleted beside the rollout
    result = FleetDeployResult(release, previous, 0.0, build_seconds, shipped, None, hosts=session.names,
                               built_on=built_on)
    try:
        result.rollout = roll_out_gated(
            session, release, previous,
            lambda host: session.start_gated(host, release, timeout=ACTIVATE_TIMEOUT + GATE_TIMEOUT),
            canary=config.rollout.canary, batch=config.rollout.batch,
            previous_of=live)
        before.over = True
    except RolloutFailed as failed:
        result.rollout, result.failed = failed.result, failed.error.message
        result.seconds = time.monotonic() - started
        reporter.result({**result.to_json(), "steps": reporter.steps_json()})
        raise failed.error from None
    finally:
        if sweeping is not None:
            sweeping.join()
    result.seconds = time.monotonic() - started
    return result

