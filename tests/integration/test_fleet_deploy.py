"""Issue 23, items 3-5: `nextdeploy deploy` to a fleet of three real sshd hosts behind a real nginx (retries
off): built once on the controller, shipped, prepared, canary then batches, all or nothing. One fleet for
the module; each test deploys on top of what the one before left (v1, v2, then releases that fail)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import have_node_tools
from nextdeploy.core.errors import ExitCode
from nextdeploy.demo.exampleapp import copy_example, set_version
from nextdeploy.fleet.hostcall import host_argv
from support.fleet import Fleet, PageThenChunks, load_through, no_failures, running_fleet
from support.hosts import skip_without_host_tools
from support.site import Run, tool_env

pytestmark = pytest.mark.integration

# Not the harness's default (/srv/app): any root would do (each test host has its own /srv and PID namespace),
# the health route below names this one.
ROOT = "/srv/fleet-deploy"
# The example app's health route, failing on a host whose root holds shared/health-fails (test (c)); or once
# the release is approved (it took traffic: after its gate's `go`) on a host whose root holds
# shared/fails-once-live (test (d)).
FAILS_WHERE_MARKED = """import { existsSync } from "node:fs";
import { APP_VERSION } from "../../version";

export const dynamic = "force-dynamic";

export async function GET() {
  const root = "/srv/fleet-deploy";
  const broken = existsSync(`${root}/shared/health-fails`) ||
    (existsSync(`${root}/shared/fails-once-live`) && existsSync(`${root}/current/.nextdeploy/approved`));
  return Response.json({ status: broken ? "broken" : "ok", version: APP_VERSION }, { status: broken ? 500 : 200 });
}
"""


@dataclass
class Deployed:
    fleet: Fleet
    app: Path  # the app's source on the controller
    releases: dict[str, str]  # version -> release id, as the tests deploy them
    root_existed: bool  # ROOT on the controller (this machine) before the module: a deploy must not make it

    def deploy(self, *args: str, env: dict[str, str] | None = None) -> Run:
        run = self.fleet.nextdeploy("deploy", "--json", *args, timeout=900, env=env)
        print(run.stderr[-6000:])
        return run

    def ssh_logged(self, log: Path) -> dict[str, str]:
        """The environment of a deploy whose every ssh command (its arguments, one line each) goes to ``log``:
        the controller's ``ssh`` on PATH, in front of the real one."""
        real = shutil.which("ssh")
        assert real is not None
        wrapper = log.parent / "ssh-logged" / "ssh"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
                           f'exec {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)
        return {"PATH": f"{wrapper.parent}{os.pathsep}{tool_env()['PATH']}"}

    def versions(self) -> dict[str, str]:
        return self.fleet.versions()

    def release_dirs(self) -> dict[str, list[str]]:
        return self.fleet.release_dirs(ROOT)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    skip_without_host_tools()
    base = tmp_path_factory.mktemp("fleet-deploy")
    app = copy_example(base / "app", "v1")
    with running_fleet(base) as fleet:
        fleet.write_config(base / "nextdeploy.toml", app, root=ROOT,
                           server={"instances": 1},
                           health={"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 20,
                                   "stable_for": 2})
        yield Deployed(fleet, app, {}, os.path.lexists(ROOT))


def only_error_line(run: Run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


def test_a_code_change_reaches_every_host_under_load_with_no_failed_request(deployed: Deployed) -> None:
    """v1 to a fresh fleet, then v2 (a code-only change) under load through nginx and a client that loads
    pages then their chunks: 0 failed requests, no non-200 chunk, every host on v2, a small delta shipped."""
    fleet = deployed.fleet
    first = deployed.deploy()
    assert first.code == 0, first.stderr[-3000:]
    v1 = first.json()["release"]
    assert fleet.live_releases(ROOT) == {name: v1 for name in fleet.hosts.names}
    assert deployed.versions() == {name: "v1" for name in fleet.hosts.names}
    deployed.releases["v1"] = v1

    set_version(deployed.app, "v2")
    commands = fleet.base / "ssh-commands.log"
    with load_through(fleet) as results, PageThenChunks(fleet.url) as client:
        second = deployed.deploy(env=deployed.ssh_logged(commands))
    visits = client.result()
    assert second.code == 0, second.stderr[-3000:]
    result = second.json()
    v2 = result["release"]
    deployed.releases["v2"] = v2
    assert v2 != v1 and result["previous"] == v1
    no_failures(results)
    assert visits.not_ok() == [], visits.not_ok()[:5]
    assert visits.chunks_fetched() > 0
    assert fleet.live_releases(ROOT) == {name: v2 for name in fleet.hosts.names}
    assert deployed.versions() == {name: "v2" for name in fleet.hosts.names}
    # Built on the controller under [build] dir, nothing under [server] root here; on each host the
    # release's links into the root (the image cache) point into that host's root, not the controller's.
    assert deployed.root_existed or not os.path.lexists(ROOT)
    assert (fleet.base / "build" / "work" / "releases" / v2).is_dir()
    for host in fleet.hosts.hosts:
        link = host.path(f"{ROOT}/releases/{v2}/.next/cache/images")
        assert os.readlink(link) == f"{ROOT}/shared/cache/images", host.name
    # On a fleet set up, each host's lock answers its facts too: the set-up check costs no call of its own.
    said = commands.read_text().splitlines()
    assert not [line for line in said if "host facts" in line], said
    assert len([line for line in said if "host lock" in line and "--facts" in line]) == 3, said
    # Canary first, then one host at a time; each host's outcome and its ship figures in the JSON result.
    assert result["waves"] == [["web1"], ["web2"], ["web3"]]
    for host in result["hosts"]:
        assert host["outcome"] == "switched"
        assert host["ship"]["bytes_sent"] < 0.10 * host["ship"]["release_bytes"], host
    print(f"v2: {result['seconds']:.1f} s (build {result['build_seconds']:.1f} s), "
          f"{result['ship_bytes']:,} bytes shipped in all; page visits {len(visits.visits)}, "
          f"chunks {visits.chunks_fetched()} ({visits.across_releases()} across releases); "
          f"load {[(m, r.total) for m, r in results.items()]}")


def test_a_release_that_crashes_at_boot_is_rejected_at_the_canary(deployed: Deployed) -> None:
    fleet = deployed.fleet
    v2 = deployed.releases["v2"]
    set_version(deployed.app, "v3", "crash-at-boot")
    with load_through(fleet) as results:
        run = deployed.deploy()
    assert run.code == ExitCode.PREFLIGHT_FAILED, run.stderr[-3000:]
    assert only_error_line(run).startswith("error: web1 failed at activate: ")
    no_failures(results)
    assert fleet.live_releases(ROOT) == {name: v2 for name in fleet.hosts.names}
    assert deployed.versions() == {name: "v2" for name in fleet.hosts.names}
    # Every host tried it at once (phase 1); the others failed too, or were aborted by web1's failure.
    outcomes = {host["host"]: host["outcome"] for host in run.json()["hosts"]}
    assert outcomes["web1"] == "failed" and {outcomes["web2"], outcomes["web3"]} <= {"failed", "aborted"}, outcomes


def log_events(fleet: Fleet, host: str, release: str) -> list[str]:
    """The events of ``release`` in ``host``'s release log."""
    lines = fleet.hosts[host].path(f"{ROOT}/releases.jsonl").read_text().splitlines()
    return [entry["event"] for entry in map(json.loads, lines) if entry["release"] == release]


def deploy_failing_on_web3(deployed: Deployed, version: str, marker_name: str, code: ExitCode) -> Run:
    """Deploy ``version`` with the health route of FAILS_WHERE_MARKED and ``shared/<marker_name>`` on web3,
    under load: it exits ``code`` naming web3, no request fails, and every host serves v2 after it."""
    fleet = deployed.fleet
    v2 = deployed.releases["v2"]
    set_version(deployed.app, version)
    (deployed.app / "app" / "api" / "health" / "route.js").write_text(FAILS_WHERE_MARKED)
    marker = fleet.hosts["web3"].path(f"{ROOT}/shared/{marker_name}")
    marker.write_text("")
    try:
        with load_through(fleet) as results:
            run = deployed.deploy()
    finally:
        marker.unlink()
    assert run.code == code, run.stderr[-3000:]
    assert only_error_line(run).startswith("error: web3 failed at activate: ")
    no_failures(results)
    assert fleet.live_releases(ROOT) == {name: v2 for name in fleet.hosts.names}
    assert deployed.versions() == {name: "v2" for name in fleet.hosts.names}
    return run


def test_a_release_failing_on_the_last_host_switches_no_host(deployed: Deployed) -> None:
    """web3's window fails while web1 and web2 wait, proven, at their gates: they are told abort, and no
    host ever switched (the new guarantee: proven everywhere before anywhere switches)."""
    fleet = deployed.fleet
    run = deploy_failing_on_web3(deployed, "v4", "health-fails", ExitCode.PREFLIGHT_FAILED)
    hosts = {host["host"]: host for host in run.json()["hosts"]}
    assert {name: host["outcome"] for name, host in hosts.items()} == {
        "web1": "aborted", "web2": "aborted", "web3": "failed"}
    assert not any(host["put_back"] for host in hosts.values())
    v4 = run.json()["release"]
    for name in ("web1", "web2"):  # proven, never switched to, and not failed there (it may go live later)
        events = log_events(fleet, name, v4)
        assert "activated" not in events and events[-1] == "refused", (name, events)
    assert log_events(fleet, "web3", v4)[-1] == "failed"


def test_a_release_failing_on_the_last_host_after_its_switch_is_put_back_everywhere(deployed: Deployed) -> None:
    """web3's release fails only once it takes traffic (its verify, after its `go`): web1 and web2 switched
    before it are put back, and every host serves what it served before."""
    run = deploy_failing_on_web3(deployed, "v4b", "fails-once-live", ExitCode.ROLLED_BACK)
    hosts = {host["host"]: host for host in run.json()["hosts"]}
    assert {name: host["outcome"] for name, host in hosts.items()} == {
        "web1": "switched", "web2": "switched", "web3": "failed"}
    assert hosts["web1"]["put_back"] and hosts["web2"]["put_back"] and not hosts["web3"]["put_back"]


def test_an_unreachable_host_is_named_and_nothing_changes_anywhere(deployed: Deployed) -> None:
    fleet = deployed.fleet
    v2 = deployed.releases["v2"]
    before = deployed.release_dirs()
    set_version(deployed.app, "v5")
    fleet.hosts["web2"].stop_sshd()
    try:
        run = deployed.deploy()
    finally:
        fleet.hosts["web2"].start_sshd()
    assert run.code == ExitCode.SSH, run.stderr[-3000:]
    assert only_error_line(run).startswith("error: cannot reach web2 over SSH")
    assert "(fix: " in only_error_line(run)
    assert fleet.live_releases(ROOT) == {name: v2 for name in fleet.hosts.names}
    assert deployed.release_dirs() == before


def test_nothing_is_left_running_on_the_hosts_once_the_app_is_stopped(deployed: Deployed) -> None:
    """`host stop` on every host, then its PM2 daemon ended (by its pid): nothing nextdeploy started runs on."""
    fleet = deployed.fleet
    for name in fleet.hosts.names:
        fleet.hosts.ssh(name, shlex.join(host_argv(ROOT, name, ["stop"])))
        fleet.hosts.ssh(name, "kill $(cat /root/.pm2/pm2.pid)")
    deadline = time.monotonic() + 20
    while any(fleet.leftovers(name) for name in fleet.hosts.names) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {name: fleet.leftovers(name) for name in fleet.hosts.names} == {name: {} for name in fleet.hosts.names}
