"""The fleet's commands besides ``deploy``: ``status``, ``releases``, ``logs``, ``start``, ``stop`` (``rollback``
is ``fleet.rollback``), run from the usual cli commands when the config lists ``[[hosts]]``. The host commands they read
(``host releases``, ``host logs``) are ``fleet.hostreads``.

Each sends the fleet's config to every host and asks each host's own nextdeploy, all hosts at once.
``status``, ``releases`` and ``logs`` read only: a host that cannot be reached is shown as such, not fatal;
they take no lock, so they send their config as ``<root>/.nextdeploy-read.toml``, never changing the
config a running deploy works with. ``start`` and ``stop`` change what serves: they hold the fleet lock,
like a deploy, and send ``<root>/nextdeploy.toml`` once they hold it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from nextdeploy.core.config import Config
from nextdeploy.core.errors import ConfigError, NextdeployError
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet import hostcall
from nextdeploy.fleet.converge import live_line
from nextdeploy.fleet.lock import fleet_lock
from nextdeploy.fleet.plan import HostStatus, convergence
from nextdeploy.fleet.session import FleetSession, fleet_session
from nextdeploy.remote.errors import SshError

# --- the controller's side ------------------------------------------------------------------------------


@contextmanager
def locked_fleet(config: Config, config_text: bytes, reporter: Reporter, command: str,
                 lock_timeout: float = 0.0) -> Iterator[FleetSession]:
    """A session over every host under the fleet lock (exit 12 when another controller holds it, after
    ``lock_timeout`` seconds), the fleet's config sent to each host once the lock is held: a controller
    refused by the lock changes nothing on any host."""
    with fleet_session(config, reporter) as session, fleet_lock(session, command, lock_timeout):
        session.send_config(config_text)
        yield session


def ask_every_host(session: FleetSession, config_text: bytes, subcommand: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each host's answer to ``subcommand``, or ``{"error": ..., "reachable": bool}`` for a host that could not
    answer: reading the fleet never stops at one host."""

    def ask(host: str) -> dict[str, Any]:
        root, read = session.roots[host], hostcall.READ_CONFIG_NAME  # never the file a running deploy uses
        try:
            hostcall.send_config(session.transport, host, root, config_text, read)
            return {"reachable": True, **hostcall.call(session.transport, host, root, subcommand, config=read)}
        except SshError as lost:
            return {"reachable": False, "error": lost.message}
        except NextdeployError as failed:
            return {"reachable": True, "error": failed.message}

    return session.each(ask)


def read_fleet(config: Config, config_text: bytes, json_mode: bool,
               reader: Callable[[FleetSession, bytes], dict[str, Any]]) -> tuple[Reporter, dict[str, Any] | None]:
    """``reader``'s report on every host; printed as the result with --json (then None is returned)."""
    reporter = Reporter(json_mode=json_mode)
    with fleet_session(config, reporter) as session:
        report = reader(session, config_text)
    if json_mode:
        reporter.result(report)
        return reporter, None
    return reporter, report


def fleet_status_json(session: FleetSession, config_text: bytes) -> dict[str, Any]:
    answers = ask_every_host(session, config_text, ["status"])
    hosts = []
    for host in session.names:
        answer = answers[host]
        workers = answer.get("workers") or []
        hosts.append({"host": host, "reachable": answer["reachable"], "live": answer.get("current"),
                      "healthy": answer.get("healthy") if "error" not in answer else False,
                      "health_problem": answer.get("health_problem"),
                      "workers": [{"pid": worker.get("pid"), "status": worker.get("status"),
                                   "release": worker.get("release")} for worker in workers],
                      "error": answer.get("error")})
    statuses = [HostStatus(entry["host"], entry["reachable"] and entry["error"] is None, entry["live"])
                for entry in hosts]
    verdict = convergence(statuses)
    return {"hosts": hosts, "verdict": str(verdict.verdict), "release": verdict.target if verdict.converged else None,
            "live": {release or "none": list(names) for release, names in verdict.live.items()},
            "unreachable": list(verdict.unreachable)}


def verdict_line(report: dict[str, Any]) -> str:
    statuses = [HostStatus(entry["host"], entry["reachable"] and entry["error"] is None, entry["live"])
                for entry in report["hosts"]]
    if report["verdict"] == "uniform":
        return f"the fleet serves {report['release'] or 'no release'} on every host"
    if report["verdict"] == "mixed":
        return f"the fleet is on mixed releases: {live_line(statuses)}"
    lost = ", ".join(report["unreachable"])
    return f"the fleet's release is unknown: {lost} could not answer ({live_line(statuses)})"


def fleet_status(config: Config, config_text: bytes, json_mode: bool) -> None:
    reporter, report = read_fleet(config, config_text, json_mode, fleet_status_json)
    if report is None:
        return
    for entry in report["hosts"]:
        if not entry["reachable"]:
            reporter.info(f"{entry['host']}: unreachable: {entry['error']}")
            continue
        if entry["error"]:
            reporter.info(f"{entry['host']}: {entry['error']}")
            continue
        online = sum(1 for worker in entry["workers"] if worker["status"] == "online")
        health = "healthy" if entry["healthy"] else f"unhealthy ({entry['health_problem']})"
        reporter.info(f"{entry['host']}: live {entry['live'] or 'none'}, {health}, "
                      f"{online}/{len(entry['workers'])} workers online")
    reporter.info(verdict_line(report))


def fleet_releases_json(session: FleetSession, config_text: bytes) -> dict[str, Any]:
    answers = ask_every_host(session, config_text, ["releases"])
    releases: dict[str, dict[str, Any]] = {}
    for host in session.names:
        answer = answers[host]
        for row in answer.get("releases") or []:
            entry = releases.setdefault(row["id"], {"id": row["id"], "on": [], "live_on": [], "status": {}})
            entry["on"].append(host)
            entry["status"][host] = row["status"]
            if row.get("current"):
                entry["live_on"].append(host)
        for release in answer.get("usable") or []:  # copied here, never activated: not in its log yet
            entry = releases.setdefault(release, {"id": release, "on": [], "live_on": [], "status": {}})
            if host not in entry["on"]:
                entry["on"].append(host)
                entry["status"][host] = "shipped"
    hosts = [{"host": host, "reachable": answers[host]["reachable"], "live": answers[host].get("current"),
              "error": answers[host].get("error")} for host in session.names]
    return {"releases": [releases[release] for release in sorted(releases)], "hosts": hosts}


def fleet_releases(config: Config, config_text: bytes, json_mode: bool) -> None:
    reporter, report = read_fleet(config, config_text, json_mode, fleet_releases_json)
    if report is None:
        return
    for host in report["hosts"]:
        if host["error"]:
            reporter.info(f"{host['host']}: {'unreachable: ' if not host['reachable'] else ''}{host['error']}")
    if not report["releases"]:
        reporter.info("no releases yet: run `nextdeploy deploy`")
    names = [host["host"] for host in report["hosts"]]
    for entry in report["releases"]:
        live = f"live on {', '.join(entry['live_on'])}" if entry["live_on"] else "live nowhere"
        missing = [host for host in names if host not in entry["on"]]
        on = "on every host" if not missing else f"on {', '.join(entry['on'])} (not {', '.join(missing)})"
        statuses = sorted(set(entry["status"].values()))
        reporter.info(f"{entry['id']}  {'/'.join(statuses)}  {on}, {live}")


def fleet_logs(config: Config, config_text: bytes, host: str | None, lines: int, follow: bool) -> None:
    """Every host's (or ``host``'s) last lines, each prefixed with the host; then, with ``follow``, their new
    lines until Ctrl-C (``fleet.logfollow``)."""
    from nextdeploy.fleet.logfollow import answer_lines, follow_fleet_logs

    if host is not None and host not in [entry.ssh for entry in config.hosts]:
        raise ConfigError(f"--host {host} is not one of the [[hosts]] ({', '.join(h.ssh for h in config.hosts)})",
                          hint="give the ssh value of one of them")
    reporter = Reporter()
    with fleet_session(config, reporter) as session:
        if host is not None:
            session.roots = {host: session.roots[host]}
        if follow:
            printing = threading.Lock()

            def say(said: list[str]) -> None:
                with printing:
                    try:
                        for line in said:
                            click.echo(line)
                    except BrokenPipeError:  # nobody reads: what is still buffered goes nowhere, not to exit 120
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                        raise

            follow_fleet_logs(session, config_text, lines, say)
            return
        answers = ask_every_host(session, config_text, ["logs", "-n", str(lines)])
    for name, answer in answers.items():
        for line in answer_lines(name, answer):
            click.echo(line)


def fleet_live_command(config: Config, config_text: bytes, json_mode: bool, name: str,
                       say: Callable[[str, dict[str, Any]], str], lock_timeout: float = 0.0) -> None:
    """``start`` or ``stop`` on every host at once, under the fleet lock."""
    reporter = Reporter(json_mode=json_mode)
    with (locked_fleet(config, config_text, reporter, name, lock_timeout) as session,
          reporter.step(f"{name} on {', '.join(session.names)}",
                        StepName.START_LIVE if name == "start" else StepName.STOP)):
        answers = session.call_each([name])
    for host, answer in answers.items():
        reporter.info(f"{host}: {say(host, answer)}")
    if json_mode:
        reporter.result({"hosts": answers})


def fleet_start(config: Config, config_text: bytes, json_mode: bool, lock_timeout: float = 0.0) -> None:
    fleet_live_command(config, config_text, json_mode, "start",
                       lambda _host, answer: f"{answer.get('release')} is serving already"
                       if answer.get("already_serving") else f"started {answer.get('release')}", lock_timeout)


def fleet_stop(config: Config, config_text: bytes, json_mode: bool, lock_timeout: float = 0.0) -> None:
    fleet_live_command(config, config_text, json_mode, "stop", lambda _host, _answer: "stopped", lock_timeout)


# --- deploy --dry-run on a fleet ------------------------------------------------------------------------

NEW_ID = "<new id>"  # the release id a deploy makes when it builds (not known before)


def dry_run_plan(config: Config) -> dict[str, Any]:
    """What a fleet deploy would run, host by host and wave by wave (pure: nothing is contacted). The host
    commands are the very command lines ssh would send."""
    from nextdeploy.fleet.build import WORK_DIR
    from nextdeploy.fleet.buildhost import dry_run_lines
    from nextdeploy.fleet.lock import lock_argv
    from nextdeploy.fleet.plan import rollout_waves
    from nextdeploy.fleet.setup import build_dir, host_root, machine_roots
    from nextdeploy.remote.argv import remote_command

    roots = {host.ssh: host_root(config, host) for host in config.hosts}
    names = list(roots)

    def on(host: str, *subcommand: str) -> str:
        return remote_command(hostcall.host_argv(roots[host], host, list(subcommand)))

    waves = rollout_waves(names, config.rollout.canary, config.rollout.batch)
    build_host = config.build.host
    machines = machine_roots(config)  # the hosts and a build box
    if build_host is None:
        build = [f"build the release once on this machine in {build_dir(config) / WORK_DIR}"]
    else:
        build = dry_run_lines(config, machines, build_dir(config) / WORK_DIR / "releases", NEW_ID)
    lines = [
        f"set up and check {', '.join(machines)}: nextdeploy and pm2 under each root, the platform against "
        f"{'this machine' if build_host is None else build_host}'s",
        *(f"lock {host}: {remote_command(lock_argv(roots[host], host, '...'))} (held until the deploy ends)"
          for host in names),
        *(f"send the config to {host}:{hostcall.host_config_path(machines[host])} (0600)" for host in machines),
        *(f"read {host}: {on(host, 'releases')} (a fleet on mixed releases is converged first)"
          for host in names),
        *build,
        *(f"ship to {host}:{roots[host]}/releases/{NEW_ID} (rsync, a delta against its live release)"
          for host in names if host != build_host),
        *(f"prepare on {host}: {on(host, 'prepare', NEW_ID)} (and the fleet's Server Actions key)"
          for host in names),
        *(f"prove on {host}: {on(host, 'activate', NEW_ID, '--gate')} (all at once; each waits at its gate, "
          "nothing switched; a failure anywhere: `abort` to every host)" for host in names),
    ]
    canary = config.rollout.canary
    for number, wave in enumerate(waves):
        kind = "canary" if number == 0 and canary else f"batch {number + (0 if canary else 1)}"
        lines += [f"{kind}: {host}: `go` to its gate (it cuts over and verifies)" for host in wave]
    lines.append("on a failure, on every host that switched: "
                 f"{remote_command(['nextdeploy', 'host', 'rollback', '--to', '<its previous release>'])}")
    return {"hosts": names, "waves": [list(wave) for wave in waves], "steps": lines}


def fleet_dry_run(config: Config, json_mode: bool) -> None:
    reporter = Reporter(json_mode=json_mode)
    plan = dry_run_plan(config)
    reporter.info("dry run: nothing changes, here or on any host, and no host is contacted; a deploy would:")
    for line in plan["steps"]:
        reporter.info(f"  {line}")
    reporter.result(plan)
