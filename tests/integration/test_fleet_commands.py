"""Issue 23, item 6 on real test hosts (tests/support/fleet.py: sshd in their own namespaces, nginx in front,
retries off): the fleet's other commands. status and releases in JSON, an unreachable host, logs (--follow
too), fleet rollback under load through nginx, stop.

One module-scoped fleet of 3 hosts serving v2 (v1 live before it): tests/support/fleetops.py. The tests run in
order, each starting from the state the previous one left (written in its docstring)."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from nextdeploy.core.errors import ExitCode
from support.fleet import Fleet, load_through, no_failures
from support.fleetops import Ops, TwoReleases, ops_fleet, our_processes
from support.processes import as_in_a_terminal
from support.site import tool_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, two_releases: TwoReleases) -> Iterator[Ops]:
    with ops_fleet(tmp_path_factory.mktemp("fleet-commands"), two_releases) as fleet:
        yield fleet


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
        deadline = time.monotonic() + 60
        while head.poll() is None:  # a line to write, to nobody (again: the first may come before the follow)
            assert time.monotonic() < deadline, "logs -f went on writing to a closed pipe"
            make_the_app_log(fleet, "web1", markers["web1"])
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(3)
        assert head.returncode == 0
        assert head.stderr is not None and head.stderr.read() == b""
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
    for name in fleet.hosts.names:
        assert not [command for command in fleet.leftovers(name).values() if "host logs" in command], name
    assert not [command for command in our_processes(fleet) if "host logs" in command]


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


def test_logs_of_every_host_then_stop_leaves_nothing_of_nextdeploy_running(ops: Ops) -> None:
    """v1 everywhere; stopped at the end."""
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
