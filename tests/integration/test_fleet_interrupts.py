"""Issue 23, item 6 on real test hosts (tests/support/fleet.py: sshd in their own namespaces, nginx in front,
retries off): the controller stopped. The fleet lock (two controllers at once, a holder SIGKILLed), a
controller SIGKILLed mid-rollout then the next command converging the fleet, a fleet left mixed converged
(a Ctrl-C while converging too), SIGTERM of a rollback and Ctrl-C of a deploy once the canary switched
(under load), SIGTERM while every host proves the release, a deploy SIGKILLed then the next deploy
converging.

One module-scoped fleet of 3 hosts serving v2 (v1 live before it): tests/support/fleetops.py. The tests run in
order, each starting from the state the previous one left (written in its docstring)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nextdeploy.core.config import load_config
from nextdeploy.core.errors import ExitCode
from nextdeploy.core.ui import Reporter
from nextdeploy.demo.exampleapp import set_version
from nextdeploy.fleet.session import fleet_session
from support.fleet import Fleet, load_through, no_failures
from support.fleetops import (
    Ops,
    TwoReleases,
    healthy,
    host_nextdeploys,
    kill_controller,
    no_host_lock_left,
    ops_fleet,
    said_before,
    settled,
    start_controller,
    stop_masters,
    stopped_once_said,
)

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, two_releases: TwoReleases) -> Iterator[Ops]:
    with ops_fleet(tmp_path_factory.mktemp("fleet-interrupts"), two_releases) as fleet:
        yield fleet


def host_configs(fleet: Fleet) -> dict[str, tuple[int, bytes]]:
    """Each host's ``<root>/nextdeploy.toml``: its inode (a config sent again is a new file) and its text."""
    found = {}
    for host in fleet.hosts.hosts:
        path = host.path("/srv/app/nextdeploy.toml")
        found[host.name] = (path.stat().st_ino, path.read_bytes())
    return found


def test_two_controllers_at_once_one_is_refused_naming_the_holder_and_a_killed_holder_frees_the_lock(
        ops: Ops) -> None:
    """v2 everywhere, left so. The refused controllers (a config of their own) change nothing on the hosts,
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
        refused = fleet.nextdeploy("rollback", "--to", ops.v1, "-c", str(other))
        took = time.monotonic() - started
        print(f"refused in {took:.1f} s: {refused.output}")
        assert refused.code == ExitCode.LOCKED, refused.output
        assert "the fleet is locked on web1 by `nextdeploy deploy` by " in refused.stderr
        assert f"(pid {holder.pid}), since 20" in refused.stderr, refused.stderr
        assert ops.live() == ops.everywhere(ops.v2)
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
    assert no_host_lock_left(fleet)


def test_a_controller_killed_mid_rollout_leaves_every_host_healthy_and_the_next_rollback_converges(
        ops: Ops) -> None:
    """v2 everywhere -> `rollback --to v1` SIGKILLed once web1 serves v1 -> `rollback --to v1`: v1 everywhere."""
    fleet = ops.fleet
    assert fleet.config is not None
    controller = subprocess.Popen([sys.executable, "-m", "nextdeploy", "rollback", "--to", ops.v1, "-c",
                                   str(fleet.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while fleet.live_release("web1") != ops.v1:
            assert controller.poll() is None, "the rollback ended before web1 switched"
            assert time.monotonic() < deadline, "web1 never switched"
            time.sleep(0.2)
    finally:
        kill_controller(fleet, controller)
    after_kill = settled(ops)
    status = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert all(host["healthy"] for host in status["hosts"]), status
    run = fleet.nextdeploy("rollback", "--to", ops.v1)
    print(run.output)
    run.expect_ok()
    if len(set(after_kill.values())) > 1:
        assert "the fleet is on mixed releases" in run.output
    assert ops.live() == ops.everywhere(ops.v1)


def test_a_fleet_left_mixed_after_the_canary_is_said_mixed_and_converged_by_the_next_rollback(ops: Ops) -> None:
    """v1 everywhere; web1 alone switched to v2 (what a controller killed after the canary leaves); then
    `rollback` SIGINTed while it converges web2 (the canary of the convergence): web2 finishes, web3 is not
    moved, exit 130 saying what is live where; then `rollback`: the fleet is said mixed, converged to v2 (the
    newest live), then rolled back to v1."""
    fleet = ops.fleet
    assert fleet.config is not None
    with fleet_session(load_config(fleet.config), Reporter()) as session:
        session.call("web1", ["rollback", "--to", ops.v2])
    assert ops.live() == {"web1": ops.v2, "web2": ops.v1, "web3": ops.v1}
    status = fleet.nextdeploy("status", "--json").expect_ok().json()
    assert status["verdict"] == "mixed" and status["live"] == {ops.v2: ["web1"], ops.v1: ["web2", "web3"]}
    said = stopped_once_said(ops, "converging", ("rollback",), f"activate {ops.v2} on web2",  # its step began
                             "web2 was moved", signal.SIGINT)
    assert said.strip().splitlines()[-1] == (
        f"error: interrupted by SIGINT while converging the fleet to {ops.v2}: web1 {ops.v2}, web2 {ops.v2}, web3 "
        f"{ops.v1}; the next deploy or rollback converges the rest")
    assert ops.live() == {"web1": ops.v2, "web2": ops.v2, "web3": ops.v1}  # no more mixed than it was found
    run = fleet.nextdeploy("rollback")
    print(run.output)
    run.expect_ok()
    assert f"the fleet is on mixed releases: web1 {ops.v2}, web2 {ops.v2}, web3 {ops.v1}" in run.output
    assert ops.live() == ops.everywhere(ops.v1)


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
    said_before(controller, output, "\nok web1: activate", "web1 switched", 600)  # a build comes first
    live = ops.fleet.live_release("web1")
    assert live is not None and live not in before
    return live


def stopped_under_load(ops: Ops, signum: int, args: tuple[str, ...],
                       moving: Callable[[subprocess.Popen[bytes], Path], str]) -> tuple[str, str]:
    """The real CLI (``args``) under load through nginx, sent ``signum`` (to its process group, as a terminal or
    a CI runner does) once ``moving`` returned the release it is switching the hosts to: it exits 130, no
    request failed, and v1 (what every host served) is back everywhere, healthy, no fleet lock left. Returns
    that release and the command's last line."""
    fleet = ops.fleet
    name = signal.Signals(signum).name
    with load_through(fleet) as results:
        controller, output = start_controller(ops, f"stopped-{name}", *args)
        try:
            target = moving(controller, output)
            os.killpg(controller.pid, signum)
            interrupted = time.monotonic()
            code = controller.wait(300)
        finally:
            kill_controller(fleet, controller)  # ended by then, unless the test failed
    said = output.read_text()
    print(f"{said}\nexit {code} {time.monotonic() - interrupted:.1f} s after the {name}")
    print({mode: (result.total, result.failed) for mode, result in results.items()})
    assert code == ExitCode.INTERRUPTED, said
    no_failures(results)
    assert ops.live() == ops.everywhere(ops.v1) and healthy(fleet)["verdict"] == "uniform"
    assert no_host_lock_left(fleet)
    return target, said.strip().splitlines()[-1]


def test_sigterm_of_a_rollback_once_the_canary_switched_puts_it_back_and_exits_130_under_load(ops: Ops) -> None:
    """v1 everywhere -> `rollback --to v2` sent SIGTERM (a CI job cancelled) once web1 switched, while web2
    switches (its own held cut-over: seconds) -> web1 and web2 put back, v1 everywhere, exit 130, 0 failed
    requests. The deploy's rollout stops the same way (its phase 2 is this engine): the Ctrl-C test below;
    this one costs no build."""

    def web1_switched(controller: subprocess.Popen[bytes], output: Path) -> str:
        said_before(controller, output, "\nok web1: rollback", "web1 switched")
        return ops.v2

    _, last = stopped_under_load(ops, signal.SIGTERM, ("rollback", "--to", ops.v2), web1_switched)
    assert last.startswith(f"error: interrupted by SIGTERM during the rollout of {ops.v2}; put web1"), last
    assert last.endswith(f"back to {ops.v1}; every host serves what it served before"), last


def test_ctrl_c_of_a_deploy_once_the_canary_switched_puts_it_back_and_exits_130_under_load(ops: Ops) -> None:
    """v1 everywhere -> `deploy` of v3 interrupted once web1 serves it (SIGINT to the controller's process
    group: a Ctrl-C at its terminal) -> v1 everywhere, healthy, exit 130, 0 failed requests through nginx."""
    set_version(ops.app, "v3")
    with slow_switch_on_web2(ops):
        new, last = stopped_under_load(ops, signal.SIGINT, ("deploy",),
                                       lambda controller, output: wait_for_the_canary(ops, controller, output,
                                                                                      {ops.v1}))
    assert last.startswith(f"error: interrupted by SIGINT during the rollout of {new}; put web1"), last
    assert last.endswith(f"back to {ops.v1}; every host serves what it served before"), last


def test_sigterm_while_every_host_proves_the_release_aborts_them_all_and_says_nothing_live_changed(
        ops: Ops) -> None:
    """v1 everywhere -> `deploy` of v3 (again) SIGTERMed while every host proves it (phase 1,
    none switched) -> every host told abort, v1 everywhere, exit 130 with the line of a deploy stopped before
    its rollout."""
    fleet = ops.fleet
    # Sent 1 s after the hosts were told to prove: their `host activate --gate` started, their workers booting
    # (proving takes longer: the stability window alone is 2 s).
    said = stopped_once_said(ops, "proving", ("deploy",), "at once (nothing switches until every host is ready)",
                             "the hosts were told to prove the release", signal.SIGTERM, timeout=600, settle=1.0)
    assert said.strip().splitlines()[-1] == (f"error: interrupted by SIGTERM before any host switched: every host "
                                             f"still serves {ops.v1} (nothing live changed)")
    assert "SIGTERM: aborting the rollout before any host switched" in said
    assert "ok web1: activate" not in said and "put back" not in said
    assert ops.live() == ops.everywhere(ops.v1)
    status = healthy(fleet)
    assert status["verdict"] == "uniform" and [len(host["workers"]) for host in status["hosts"]] == [1, 1, 1]
    assert not any(host_nextdeploys(fleet).values()), host_nextdeploys(fleet)


def test_a_deploy_killed_after_the_canary_then_deploy_converges_every_host_and_deploys(ops: Ops) -> None:
    """v1 everywhere -> `deploy` (v3 again) SIGKILLed once web1 serves it -> `deploy` of v4: the fleet is
    said mixed, converged, then v4 on every host, healthy."""
    fleet = ops.fleet
    with slow_switch_on_web2(ops):
        controller, output = start_controller(ops, "killed", "deploy")
        try:
            killed_release = wait_for_the_canary(ops, controller, output, {ops.v1})
        finally:
            kill_controller(fleet, controller)
    after_kill = settled(ops)
    assert after_kill["web1"] == killed_release and after_kill["web3"] == ops.v1, after_kill
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
