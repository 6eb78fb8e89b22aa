"""Issue 23, items 6-7 on real test hosts (tests/support/fleet.py: sshd in their own namespaces, nginx in
front, retries off): the fleet lock (two controllers at once, a holder SIGKILLed), a controller SIGKILLed
mid-rollout then the next command converging the fleet, fleet rollback under load through nginx, status and
releases in JSON, an unreachable host, logs, stop.

One module-scoped fleet of 3 hosts. Two real builds (v1, v2: a code-only change) made once by local deploys
of a Site, shipped to every host (fleet.ship) and put live there by each host's own nextdeploy (`host
activate`), as a fleet deploy does; the tests then run the real CLI on the controller. They run in order,
each starting from the state the previous one left (written in its docstring)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import have_node_tools
from nextdeploy.core.config import load_config
from nextdeploy.core.errors import ExitCode
from nextdeploy.core.ui import Reporter
from nextdeploy.demo.exampleapp import set_version
from nextdeploy.fleet.hostcall import send_config
from nextdeploy.fleet.prepare import prepare_key
from nextdeploy.fleet.session import fleet_session
from nextdeploy.fleet.ship import ship
from support.fleet import Fleet, load_through, no_failures, running_fleet
from support.processes import as_in_a_terminal
from support.site import Site, tool_env

pytestmark = pytest.mark.integration

HEALTH = {"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 15, "stable_for": 2}
SETTLE_SECONDS = 120  # bound on waiting for a host's own nextdeploy to finish after its controller died

HOLDER = """
import sys, time
from pathlib import Path
from nextdeploy.core.config import load_config
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet.lock import fleet_lock
from nextdeploy.fleet.session import fleet_session
with fleet_session(load_config(Path(sys.argv[1])), Reporter()) as session, fleet_lock(session, "deploy"):
    print("held", session.transport.control_dir, flush=True)
    time.sleep(120)
"""


@dataclass
class Ops:
    fleet: Fleet
    v1: str
    v2: str
    app: Path  # the app's source (v2), which the config deploys: a fleet `deploy` builds it on the controller

    def live(self) -> dict[str, str | None]:
        return self.fleet.live_releases()

    def everywhere(self, release: str) -> dict[str, str]:
        return dict.fromkeys(self.fleet.hosts.names, release)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    base = tmp_path_factory.mktemp("fleet-ops")
    site = Site(base / "site")
    try:
        site.deploy("v1").expect_ok()
        v1 = site.current()
        site.deploy("v2").expect_ok()
        v2 = site.current()
    finally:
        site.close()
    assert v1 and v2 and v1 < v2
    with running_fleet(base / "fleet") as fleet:
        config = fleet.write_config(base / "nextdeploy.toml", site.app_dir, health=HEALTH,
                                    server={"instances": 1})
        fleet.nextdeploy("setup", timeout=900).expect_ok()
        # The controller's own builds (the fleet deploys below) start from the Site's Next.js build cache: a
        # cold `next build` would cost CI minutes.
        work = fleet.base / "build" / "work"
        shutil.copytree(site.root / "cache" / "next", work / "cache" / "next", symlinks=True)
        shutil.copyfile(site.root / ".nextdeploy-root", work / ".nextdeploy-root")
        with fleet_session(load_config(config), Reporter()) as session:
            for release in (v1, v2):
                ship(session.transport, session.roots, site.root / "releases" / release)
            prepare_key(session.transport, session.roots)
            session.each(lambda host: send_config(session.transport, host, session.roots[host], config.read_bytes()))
            for release in (v1, v2):
                session.call_each(["activate", release])
        yield Ops(fleet, v1, v2, site.app_dir)


def stop_masters(fleet: Fleet, control_dir: str | None = None) -> None:
    """The ssh connection masters a SIGKILLed controller left (they outlive it by ControlPersist): ours
    only, found by the test ssh config (and the killed run's control dir) on their command line."""
    marker = str(fleet.hosts.ssh_config)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ssh ") and marker in command and (control_dir is None or control_dir in command):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def host_nextdeploys(fleet: Fleet) -> dict[str, list[str]]:
    """The nextdeploy processes running on each host."""
    return {name: [command for command in fleet.leftovers(name).values() if "nextdeploy host" in command]
            for name in fleet.hosts.names}


def kill_controller(fleet: Fleet, controller: subprocess.Popen[bytes]) -> None:
    """SIGKILL the controller's process group, and what it leaves running of ours (its ssh masters, and its
    ssh sessions, which run in sessions of their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(controller.pid, signal.SIGKILL)
    controller.wait(30)
    stop_masters(fleet)


def healthy(fleet: Fleet) -> dict[str, Any]:
    """``status --json``, once it said every host is healthy."""
    status: dict[str, Any] = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert all(host["healthy"] for host in status["hosts"]), status
    return status


def settled(ops: Ops) -> dict[str, str | None]:
    """Every host's live release once the hosts' own nextdeploy finished what its killed controller left."""
    wait_hosts_quiet(ops.fleet)
    after_kill = ops.live()
    print(f"after the kill: {after_kill}")
    return after_kill


def wait_hosts_quiet(fleet: Fleet) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while any(host_nextdeploys(fleet).values()):
        assert time.monotonic() < deadline, f"nextdeploy still runs on the hosts: {host_nextdeploys(fleet)}"
        time.sleep(0.5)


def test_status_and_releases_json_show_one_release_everywhere(ops: Ops) -> None:
    """v2 live on every host."""
    status = ops.fleet.nextdeploy("status", "--json").expect_ok().json()
    assert status["verdict"] == "uniform" and status["release"] == ops.v2, status
    assert [host["host"] for host in status["hosts"]] == ops.fleet.hosts.names
    for host in status["hosts"]:
        assert host["reachable"] and host["healthy"] and host["live"] == ops.v2, host
        assert [worker["status"] for worker in host["workers"]] == ["online"], host
    releases = ops.fleet.nextdeploy("releases", "--json").expect_ok().json()
    by_id = {entry["id"]: entry for entry in releases["releases"]}
    assert set(by_id) == {ops.v1, ops.v2}
    assert by_id[ops.v2]["live_on"] == ops.fleet.hosts.names and by_id[ops.v1]["live_on"] == []
    assert by_id[ops.v1]["on"] == ops.fleet.hosts.names
    assert set(by_id[ops.v1]["status"].values()) == {"active"}
    text = ops.fleet.nextdeploy("status").expect_ok().output
    assert f"the fleet serves {ops.v2} on every host" in text and "web3: live" in text, text


def test_fleet_rollback_under_load_through_nginx_fails_no_request(ops: Ops) -> None:
    """v2 everywhere -> v1 everywhere, by `rollback` (the fleet's previous good release), canary first."""
    with load_through(ops.fleet) as results:
        run = ops.fleet.nextdeploy("rollback")
    print(run.output)
    run.expect_ok()
    no_failures(results)
    print({mode: (result.total, result.failed) for mode, result in results.items()})
    assert ops.live() == ops.everywhere(ops.v1)
    lines = run.output.splitlines()
    canary = next(index for index, line in enumerate(lines) if line.startswith("canary: rollback"))
    assert "web1" in lines[canary] and "web2" not in lines[canary], lines


def host_configs(fleet: Fleet) -> dict[str, tuple[int, bytes]]:
    """Each host's ``<root>/nextdeploy.toml``: its inode (a config sent again is a new file) and its text."""
    found = {}
    for host in fleet.hosts.hosts:
        path = host.path("/srv/app/nextdeploy.toml")
        found[host.name] = (path.stat().st_ino, path.read_bytes())
    return found


def test_two_controllers_at_once_one_is_refused_naming_the_holder_and_a_killed_holder_frees_the_lock(
        ops: Ops) -> None:
    """v1 everywhere, left so. The refused controllers (a config of their own) change nothing on the hosts,
    not even the config the holder's hosts run with; with --lock-timeout they wait that long first. A
    status meanwhile (no lock) does not change that config either."""
    fleet = ops.fleet
    assert fleet.config is not None
    other = fleet.config.with_name("other-controller.toml")
    other.write_text(fleet.config.read_text() + "\n# the second controller's own copy\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(fleet.config)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    control_dir = None
    try:
        assert holder.stdout is not None
        said = holder.stdout.readline().split()
        assert said and said[0] == "held", holder.stderr.read() if holder.stderr else ""
        control_dir = said[1]
        configs = host_configs(fleet)
        started = time.monotonic()
        refused = fleet.nextdeploy("rollback", "--to", ops.v2, "-c", str(other))
        took = time.monotonic() - started
        print(f"refused in {took:.1f} s: {refused.output}")
        assert refused.code == ExitCode.LOCKED, refused.output
        assert "the fleet is locked on web1 by `nextdeploy deploy` by " in refused.stderr
        assert f"(pid {holder.pid}), since 20" in refused.stderr, refused.stderr
        assert ops.live() == ops.everywhere(ops.v1)
        refused_deploy = fleet.nextdeploy("deploy", "-c", str(other))  # set-up check, then the lock: no build
        assert refused_deploy.code == ExitCode.LOCKED, refused_deploy.output
        assert host_configs(fleet) == configs
        started = time.monotonic()
        refused_stop = fleet.nextdeploy("stop", "--lock-timeout", "3", "-c", str(other))
        waited = time.monotonic() - started
        assert refused_stop.code == ExitCode.LOCKED, refused_stop.output
        assert waited >= 3 and "waiting for it (at most 3 s in all" in refused_stop.output, refused_stop.output
        assert "(waited 3 s)" in refused_stop.stderr.splitlines()[-1], refused_stop.stderr
        fleet.nextdeploy("status", "-c", str(other)).expect_ok()  # a reader takes no lock: its config goes aside
        assert host_configs(fleet) == configs
        assert ops.fleet.nextdeploy("status", "--json").json()["hosts"][0]["workers"]
    finally:
        holder.send_signal(signal.SIGKILL)  # the controller dies outright: its ssh sessions' stdin closes
        holder.wait(30)
    killed = time.monotonic()
    deadline = killed + 30
    while True:
        again = fleet.nextdeploy("start")  # takes the fleet lock: free once the killed holder's sessions end
        if again.code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    stop_masters(fleet, control_dir)
    again.expect_ok()
    print(f"the lock was taken again {time.monotonic() - killed:.1f} s after the holder was killed")
    assert not any("host lock" in command for commands in host_nextdeploys(fleet).values() for command in commands)


def test_a_fleet_left_mixed_after_the_canary_is_said_mixed_and_converged_by_the_next_rollback(ops: Ops) -> None:
    """v1 everywhere; web1 alone switched to v2 (what a controller killed after the canary leaves); then
    `rollback`: the fleet is said mixed, converged to v2 (the newest live), then rolled back to v1."""
    fleet = ops.fleet
    assert fleet.config is not None
    with fleet_session(load_config(fleet.config), Reporter()) as session:
        session.call("web1", ["rollback", "--to", ops.v2])
    assert ops.live() == {"web1": ops.v2, "web2": ops.v1, "web3": ops.v1}
    status = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert status["verdict"] == "mixed" and status["live"] == {ops.v2: ["web1"], ops.v1: ["web2", "web3"]}
    run = fleet.nextdeploy("rollback")
    print(run.output)
    run.expect_ok()
    assert f"the fleet is on mixed releases: web1 {ops.v2}, web2 {ops.v1}, web3 {ops.v1}" in run.output
    assert ops.live() == ops.everywhere(ops.v1)


def test_a_controller_killed_mid_rollout_leaves_every_host_healthy_and_the_next_rollback_converges(
        ops: Ops) -> None:
    """v1 everywhere -> `rollback --to v2` SIGKILLed once web1 serves v2 -> `rollback --to v2`: v2 everywhere."""
    fleet = ops.fleet
    assert fleet.config is not None
    controller = subprocess.Popen([sys.executable, "-m", "nextdeploy", "rollback", "--to", ops.v2, "-c",
                                   str(fleet.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while fleet.live_release("web1") != ops.v2:
            assert controller.poll() is None, "the rollback ended before web1 switched"
            assert time.monotonic() < deadline, "web1 never switched"
            time.sleep(0.2)
    finally:
        kill_controller(fleet, controller)
    after_kill = settled(ops)
    status = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert all(host["healthy"] for host in status["hosts"]), status
    run = fleet.nextdeploy("rollback", "--to", ops.v2)
    print(run.output)
    run.expect_ok()
    if len(set(after_kill.values())) > 1:
        assert "the fleet is on mixed releases" in run.output
    assert ops.live() == ops.everywhere(ops.v2)


def test_an_unreachable_host_is_shown_by_status_and_stops_a_rollback_before_anything_changes(ops: Ops) -> None:
    """v2 everywhere, left so."""
    fleet = ops.fleet
    web3 = fleet.hosts["web3"]
    web3.stop_sshd()
    try:
        status = fleet.nextdeploy("status", "--json")
        assert status.code == 0, status.output
        report = status.json()
        assert report["verdict"] == "unknown" and report["unreachable"] == ["web3"], report
        assert not report["hosts"][2]["reachable"] and "web3" in report["hosts"][2]["error"]
        assert report["hosts"][0]["healthy"]
        refused = fleet.nextdeploy("rollback", "--to", ops.v1)
        assert refused.code == ExitCode.SSH, refused.output
        assert "web3" in refused.stderr.splitlines()[-1], refused.stderr
    finally:
        web3.start_sshd()
    assert ops.live() == ops.everywhere(ops.v2)


def make_the_app_log(fleet: Fleet, name: str, marker: str) -> None:
    """A Server Action request with an id no release has, straight to one host's app: Next logs a warning
    naming the id."""
    host = fleet.hosts[name]
    request = urllib.request.Request(f"http://{host.address}:{fleet.port}/action", data=b"[]", method="POST",
                                     headers={"Next-Action": marker, "Content-Type": "text/plain;charset=UTF-8"})
    with contextlib.suppress(urllib.error.URLError):
        urllib.request.urlopen(request, timeout=10).close()


def test_logs_follow_prefixes_each_hosts_lines_goes_on_without_a_lost_host_and_ends_on_ctrl_c(ops: Ops) -> None:
    """v2 everywhere, left so. `logs --follow` on the fleet: the app's new lines on web1 and web2 come
    prefixed with their host; web3's side killed, web3 is said lost and web1 still streams; Ctrl-C ends it
    with exit 0, nothing of it left on any host nor here."""
    fleet = ops.fleet
    assert fleet.config is not None
    follow = subprocess.Popen([sys.executable, "-m", "nextdeploy", "logs", "--follow", "-n", "0", "-c",
                               str(fleet.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, env=tool_env(), preexec_fn=as_in_a_terminal)
    said: list[str] = []
    assert follow.stdout is not None
    reader = threading.Thread(target=lambda: said.extend(iter(follow.stdout.readline, "")), daemon=True)
    reader.start()

    def wait_for(what: str, found: Callable[[], bool], poke: Callable[[], None] = lambda: None) -> None:
        deadline = time.monotonic() + 60
        while not found():
            assert follow.poll() is None, f"logs --follow ended: {follow.stderr.read() if follow.stderr else ''}"
            assert time.monotonic() < deadline, f"never saw {what}: {said}"
            poke()
            time.sleep(0.5)

    markers = {name: hashlib.sha1(f"follow {name} {time.time()}".encode()).hexdigest() + "00"
               for name in fleet.hosts.names}
    try:
        for name in ("web1", "web2"):
            wait_for(f"{name}'s line", lambda name=name: any(markers[name] in line for line in said),
                     lambda name=name: make_the_app_log(fleet, name, markers[name]))
        for name in ("web1", "web2"):
            mine = [line for line in said if markers[name] in line]
            assert all(line.startswith(f"{name} | ") for line in mine), mine
        fleet.hosts.ssh("web3", "pkill -f '[n]extdeploy host logs'")
        wait_for("web3 lost", lambda: any(line.startswith("web3 | lost: ") for line in said))
        again = markers["web1"][:-2] + "11"
        wait_for("web1 after web3 was lost", lambda: any(again in line for line in said),
                 lambda: make_the_app_log(fleet, "web1", again))
        assert all(line.startswith("web1 | ") for line in said if again in line)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(30) == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    reader.join(10)
    print("".join(said[-8:]))
    assert len([line for line in said if line.startswith("web3 | lost: ")]) == 1, said
    # Read by a program that stops reading (`logs -f | head -1`): it ends too, exit 0, without a word.
    head = subprocess.Popen([sys.executable, "-m", "nextdeploy", "logs", "-f", "-n", "1", "--host", "web1", "-c",
                             str(fleet.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=tool_env())
    try:
        assert head.stdout is not None and head.stdout.readline().startswith(b"web1 | ==> ")
        head.stdout.close()
        make_the_app_log(fleet, "web1", markers["web1"])  # a line to write, to nobody
        assert head.wait(60) == 0
        assert head.stderr is not None and head.stderr.read() == b""
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
    for name in fleet.hosts.names:
        assert not [command for command in fleet.leftovers(name).values() if "host logs" in command], name
    assert not [command for command in our_processes(fleet) if "host logs" in command]


def our_processes(fleet: Fleet) -> list[str]:
    """The command lines of this machine's processes that reach the test hosts (ssh with their config)."""
    marker = str(fleet.hosts.ssh_config)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in command:
                found.append(command)
    return found


def start_controller(ops: Ops, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The real CLI on the controller, in a process group of its own (as a terminal's foreground job), its
    output into a file (a pipe nobody reads would block it)."""
    assert ops.fleet.config is not None
    output = ops.fleet.base / f"{name}.log"
    with output.open("wb") as sink:
        controller = subprocess.Popen([sys.executable, "-m", "nextdeploy", *args, "-c", str(ops.fleet.config)],
                                      stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=tool_env(),
                                      start_new_session=True)
    return controller, output


# The example app's health route, slow on web2 once its release is approved (it took traffic, after its
# gate's `go`) while shared/slow-once-live is there: web2's switch (its verify probes that route) then lasts
# seconds, so a signal sent once web1 switched lands while web2 switches and before web3 is told `go`
# (a switch is otherwise well under a second: every host was proven before).
SLOW_ONCE_LIVE = """import { existsSync } from "node:fs";
import { APP_VERSION } from "../../version";

export const dynamic = "force-dynamic";

export async function GET() {
  if (existsSync("/srv/app/shared/slow-once-live") && existsSync("/srv/app/current/.nextdeploy/approved")) {
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  return Response.json({ status: "ok", version: APP_VERSION });
}
"""


@contextlib.contextmanager
def slow_switch_on_web2(ops: Ops) -> Iterator[None]:
    """The app's health route is SLOW_ONCE_LIVE (until the next set_version), its marker on web2 meanwhile."""
    (ops.app / "app" / "api" / "health" / "route.js").write_text(SLOW_ONCE_LIVE)
    marker = ops.fleet.hosts["web2"].path("/srv/app/shared/slow-once-live")
    marker.write_text("")
    try:
        yield
    finally:
        marker.unlink()


def wait_for_the_canary(ops: Ops, controller: subprocess.Popen[bytes], output: Path, before: set[str]) -> str:
    """The release web1 switched to (not one of ``before``), once it serves it: its `current` moves when its
    held workers start (phase 1: every host proven first), so the controller's word that web1 switched is
    waited for; web2 is switching then (phase 2, slowed: ``slow_switch_on_web2``), web3 waits at its gate."""
    deadline = time.monotonic() + 600  # a build on the controller comes first
    while "\nok web1: activate" not in output.read_text():
        assert controller.poll() is None, f"the deploy ended before web1 switched:\n{output.read_text()}"
        assert time.monotonic() < deadline, "web1 never switched"
        time.sleep(0.02)
    live = ops.fleet.live_release("web1")
    assert live is not None and live not in before
    return live


def test_ctrl_c_of_a_deploy_once_the_canary_switched_puts_it_back_and_exits_130_under_load(ops: Ops) -> None:
    """v2 everywhere -> `deploy` of v3 interrupted once web1 serves it (SIGINT to the controller's process
    group: a Ctrl-C at its terminal) -> v2 everywhere, healthy, exit 130, 0 failed requests through nginx."""
    fleet = ops.fleet
    set_version(ops.app, "v3")
    with load_through(fleet) as results, slow_switch_on_web2(ops):
        controller, output = start_controller(ops, "ctrl-c", "deploy")
        try:
            new = wait_for_the_canary(ops, controller, output, {ops.v2})
            os.killpg(controller.pid, signal.SIGINT)
            interrupted = time.monotonic()
            code = controller.wait(300)
        finally:
            kill_controller(fleet, controller)  # ended by then, unless the test failed
    said = output.read_text()
    print(f"{said}\nexit {code} {time.monotonic() - interrupted:.1f} s after the SIGINT")
    print({mode: (result.total, result.failed) for mode, result in results.items()})
    assert code == ExitCode.INTERRUPTED, said
    last = said.strip().splitlines()[-1]
    assert last.startswith(f"error: interrupted by SIGINT during the rollout of {new}; put web1"), last
    assert last.endswith(f"back to {ops.v2}; every host serves what it served before"), last
    no_failures(results)
    assert ops.live() == ops.everywhere(ops.v2) and healthy(fleet)["verdict"] == "uniform"
    assert not any("host lock" in command for commands in host_nextdeploys(fleet).values() for command in commands)


def test_a_deploy_killed_after_the_canary_then_deploy_converges_every_host_and_deploys(ops: Ops) -> None:
    """v2 everywhere -> `deploy` (v3 again) SIGKILLed once web1 serves it -> `deploy` of v4: the fleet is
    said mixed, converged, then v4 on every host, healthy."""
    fleet = ops.fleet
    with slow_switch_on_web2(ops):
        controller, output = start_controller(ops, "killed", "deploy")
        try:
            killed_release = wait_for_the_canary(ops, controller, output, {ops.v2})
        finally:
            kill_controller(fleet, controller)
    after_kill = settled(ops)
    assert after_kill["web1"] == killed_release and after_kill["web3"] == ops.v2, after_kill
    assert healthy(fleet)["verdict"] == "mixed"
    set_version(ops.app, "v4")
    run = fleet.nextdeploy("deploy", "--json", timeout=900)
    print(run.stderr[-6000:])
    run.expect_ok()
    assert "the fleet is on mixed releases: web1 " + killed_release in run.stderr
    assert f"web3 to {killed_release}\n" in run.stderr, run.stderr  # converging web3 (and web2 if it was left)
    deployed = run.json()
    assert deployed["previous"] == killed_release
    assert ops.live() == ops.everywhere(deployed["release"])
    for host in fleet.hosts.hosts:
        with urllib.request.urlopen(f"http://{host.address}:{fleet.port}/api/health", timeout=5) as response:
            assert json.loads(response.read())["version"] == "v4", host.name
    assert healthy(fleet)["verdict"] == "uniform"


def test_logs_of_every_host_then_stop_leaves_nothing_of_nextdeploy_running(ops: Ops) -> None:
    """One release everywhere (v4, the killed deploy's successor); stopped at the end."""
    fleet = ops.fleet
    logs = fleet.nextdeploy("logs", "-n", "5").expect_ok().stdout
    for name in fleet.hosts.names:
        assert f"{name} | ==> " in logs, logs
    one = fleet.nextdeploy("logs", "--host", "web2", "-n", "5").expect_ok().stdout
    assert {line.split(" | ")[0] for line in one.splitlines()} == {"web2"}, one
    fleet.nextdeploy("stop").expect_ok()
    status = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert all(host["workers"] == [] for host in status["hosts"]), status
    for name in fleet.hosts.names:
        left = fleet.leftovers(name)
        print(f"{name}: {left}")
        assert not [command for command in left.values() if "nextdeploy host" in command or "launcher" in command], left
