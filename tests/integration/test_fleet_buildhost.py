"""Issue 23, item 3: ``[build] host = "web1"``: the release built on web1 (one of the fleet's two real sshd
hosts), pulled by the controller and shipped on to web2; no build on the controller. Then a build box: web3,
a test host that is not one of the [[hosts]]. One fleet for the module; each test goes on from what the one
before left."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import have_node_tools
from nextdeploy.core.errors import ExitCode
from nextdeploy.demo.exampleapp import copy_example, set_version
from nextdeploy.fleet.lock import take_host_lock
from support.fleet import Fleet, running_fleet
from support.fleetops import stop_masters
from support.hosts import skip_without_host_tools
from support.site import Run, tool_env

pytestmark = pytest.mark.integration

ROOT = "/srv/fleet-buildhost"  # any root would do: each test host has its own /srv and PID namespace
HOSTS = ["web1", "web2"]  # the [[hosts]]; web3 is the build box of the last tests
BOX_ROOT = "/srv/build-box"


@dataclass
class BuildFleet:
    fleet: Fleet
    app: Path
    releases: dict[str, str]

    def deploy(self, *args: str) -> Run:
        run = self.fleet.nextdeploy("deploy", "--json", *args, timeout=1500)
        print(run.stderr[-6000:])
        return run

    def log(self, name: str, release: str) -> list[dict[str, Any]]:
        """The entries of ``release`` in host ``name``'s release log."""
        lines = self.fleet.hosts[name].path(f"{ROOT}/releases.jsonl").read_text().splitlines()
        return [entry for entry in map(json.loads, lines) if entry["release"] == release]

    def events(self, name: str, release: str) -> list[str]:
        return [entry["event"] for entry in self.log(name, release)]

    def revision(self, name: str, release: str) -> str | None:
        """The revision host ``name`` logged ``release`` built with."""
        return next(entry.get("revision") for entry in self.log(name, release) if entry["event"] == "built")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildFleet]:
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    skip_without_host_tools()
    base = tmp_path_factory.mktemp("fleet-buildhost")
    app = copy_example(base / "app", "v1")
    git(app, "init", "--quiet")
    git(app, "add", "-A")
    git(app, "commit", "--quiet", "-m", "v1")
    with running_fleet(base, count=3) as fleet:
        config = fleet.write_config(base / "nextdeploy.toml", app, root=ROOT, server={"instances": 1},
                                    health={"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 20},
                                    build={"dir": str(base / "build"), "host": "web1"})
        web3 = fleet.hosts["web3"]
        config.write_text(config.read_text().replace(f'[[hosts]]\nssh = "web3"\nhostname = "{web3.address}"\n', ""))
        yield BuildFleet(fleet, app, {})


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def only_error_line(run: Run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


def no_build_here(fleet: Fleet) -> None:
    """Nothing was built on the controller: no build dir, build log, dependency or Next.js cache under its
    [build] dir (only the pulled releases and the release log)."""
    work = fleet.base / "build" / "work"
    assert not any((work / "builds").glob("*")) if (work / "builds").exists() else True
    assert list(work.glob("logs/build-*.log")) == []
    assert not (work / "cache").exists() or not any((work / "cache").rglob("*")), list((work / "cache").rglob("*"))
    installed = [path for path in work.rglob("node_modules") if path.relative_to(work).parts[0] != "releases"]
    assert installed == []  # a release's own (traced) node_modules aside


def test_a_release_built_on_web1_is_pulled_and_shipped_to_web2_then_a_code_change_as_a_delta(
        built: BuildFleet) -> None:
    fleet = built.fleet
    first = built.deploy()
    assert first.code == 0, first.stderr[-3000:]
    v1 = first.json()["release"]
    build = first.json()["build"]
    assert build["host"] == "web1"
    # The first pull has nothing to compare with: the whole release comes (what the figure counts).
    release_bytes = first.json()["hosts"][1]["ship"]["release_bytes"]
    assert build["pulled_bytes"] > 0.5 * release_bytes, (build, release_bytes)
    assert built.fleet.versions(HOSTS) == {"web1": "v1", "web2": "v1"}
    built.releases["v1"] = v1

    set_version(built.app, "v2")
    git(built.app, "commit", "--quiet", "-am", "v2")
    second = built.deploy()
    assert second.code == 0, second.stderr[-3000:]
    result = second.json()
    v2 = result["release"]
    built.releases["v2"] = v2
    assert v2 != v1 and result["previous"] == v1
    assert {name: fleet.live_release(name, ROOT) for name in HOSTS} == {"web1": v2, "web2": v2}
    assert built.fleet.versions(HOSTS) == {"web1": "v2", "web2": "v2"}
    assert f"deployed {v2} to 2 host(s) (previous: {v1}); build on web1 " in second.stderr
    assert re.search(r"^  web1: build the app \(next build\) \([0-9.]+ s\)$", second.stderr, re.M), second.stderr
    # The revision of the controller's work tree (the copy on web1 has no .git), in every host's record.
    head = git(built.app, "rev-parse", "HEAD").strip()
    assert result["build"]["revision"] == head
    for name in HOSTS:
        assert built.revision(name, v2) == head, name
    # Built on web1: its build log and its release log's `building`; web2 only logged it when prepared; the
    # controller built nothing and keeps the pulled copy it shipped from.
    assert fleet.hosts["web1"].path(f"{ROOT}/logs/build-{v2}.log").is_file()
    assert built.events("web1", v2)[:2] == ["building", "built"]
    assert "building" not in built.events("web2", v2) and "built" in built.events("web2", v2)
    assert not fleet.hosts["web2"].path(f"{ROOT}/logs/build-{v2}.log").exists()
    no_build_here(fleet)
    assert (fleet.base / "build" / "work" / "releases" / v2).is_dir()
    # The source went to web1 (without node_modules and .next); the release was not shipped to web1.
    source = fleet.hosts["web1"].path(f"{ROOT}/source")
    assert (source / "app" / "version.js").read_text() == (built.app / "app" / "version.js").read_text()
    hosts: dict[str, Any] = {host["host"]: host for host in result["hosts"]}
    assert hosts["web1"]["ship"] is None and hosts["web1"]["outcome"] == "switched"
    # A code-only change: small deltas all the way (source to web1, web1 to here, here to web2).
    ship = hosts["web2"]["ship"]
    assert ship["bytes_sent"] < 0.10 * ship["release_bytes"], ship
    assert result["build"]["source_bytes_sent"] < 200_000, result["build"]
    assert result["build"]["pulled_bytes"] < 0.10 * ship["release_bytes"], result["build"]
    print(f"v2: {result['seconds']:.1f} s (build on web1 {result['build_seconds']:.1f} s); source "
          f"{result['build']['source_bytes_sent']:,} B, pulled {result['build']['pulled_bytes']:,} B, shipped to "
          f"web2 {ship['bytes_sent']:,} B of {ship['release_bytes']:,} B")


def test_a_build_failing_on_the_build_host_is_one_line_naming_it_and_nothing_live_changes(
        built: BuildFleet) -> None:
    fleet = built.fleet
    v2 = built.releases["v2"]
    before = built.fleet.release_dirs(ROOT, HOSTS)
    (built.app / "app" / "page.jsx").write_text("export default function Page() { return <main>; }\n")
    try:
        run = built.deploy()
    finally:
        set_version(built.app, "v2")
    assert run.code == ExitCode.BUILD_FAILED, run.stderr[-3000:]
    line = only_error_line(run)
    assert line.startswith(f"error: web1 failed at build: the build failed (full log: {ROOT}/logs/build-"), line
    assert "(fix: fix the build error shown above" in line
    assert {name: fleet.live_release(name, ROOT) for name in HOSTS} == {"web1": v2, "web2": v2}
    assert built.fleet.versions(HOSTS) == {"web1": "v2", "web2": "v2"}
    assert built.fleet.release_dirs(ROOT, HOSTS) == before


def test_the_build_host_unreachable_is_named_before_anything_changes(built: BuildFleet) -> None:
    fleet = built.fleet
    before = built.fleet.release_dirs(ROOT, HOSTS)
    set_version(built.app, "v3")
    fleet.hosts["web1"].stop_sshd()
    try:
        run = built.deploy()
    finally:
        fleet.hosts["web1"].start_sshd()
    assert run.code == ExitCode.SSH, run.stderr[-3000:]
    assert only_error_line(run).startswith("error: cannot reach web1 over SSH")
    assert built.fleet.release_dirs(ROOT, HOSTS) == before


@pytest.fixture
def node_18_on_every_host(built: BuildFleet, tmp_path: Path) -> Iterator[None]:
    """Every host's `node` answers v18 (a bind mount in the host's own mount namespace only)."""
    hosts = built.fleet.hosts
    for name in HOSTS:
        fake = hosts[name].path("/srv/fake-node")
        fake.write_text("#!/bin/sh\necho v18.20.0\n")
        fake.chmod(0o755)
        hosts.ssh(name, "mount --bind /srv/fake-node \"$(command -v node)\"")
    try:
        # The mount stays in the host's namespace (private propagation), never this machine's.
        here = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
        assert not here.startswith("v18."), here
        assert hosts.ssh(HOSTS[0], "node --version").stdout.startswith("v18.")
        yield
    finally:
        for name in HOSTS:
            hosts.ssh(name, "umount \"$(command -v node)\"", check=False)


def test_hosts_of_another_platform_than_this_machine_are_refused_with_build_host_as_a_fix(
        built: BuildFleet, node_18_on_every_host: None) -> None:
    fleet = built.fleet
    config = fleet.config
    assert config is not None
    text = config.read_text()
    plain = fleet.base / "here.toml"
    plain.write_text(text.replace('host = "web1"\n', ""))
    fleet.config = plain
    try:
        run = fleet.nextdeploy("deploy")
    finally:
        fleet.config = config
    assert run.code == ExitCode.PLATFORM, run.stderr[-3000:]
    line = only_error_line(run)
    assert "a release built on this machine" in line and "would not run on web1 (and web2)" in line, line
    assert 'Node major: ' in line and line.endswith('[build] host = "web1" in nextdeploy.toml)'), line
    assert os.path.lexists(fleet.hosts["web1"].path(f"{ROOT}/current"))
    print(shlex.quote(line))


def box_config(fleet: Fleet) -> Path:
    """The module's config with web3 as its build box, in /srv/build-box."""
    assert fleet.config is not None
    box = fleet.base / "box.toml"
    box.write_text(fleet.config.read_text().replace('host = "web1"\n', f'host = "web3"\nroot = "{BOX_ROOT}"\n'))
    return box


def test_a_build_box_builds_for_the_hosts_and_serves_nothing(built: BuildFleet) -> None:
    """[build] host = "web3", not one of the [[hosts]]: set up there, built there in [build] root, pulled and
    shipped to web1 and web2, twice; web3 serves nothing, holds no live release, keeps one release."""
    fleet = built.fleet
    config = fleet.config
    fleet.config = box_config(fleet)
    set_version(built.app, "v6")
    try:
        first = built.deploy()
        assert first.code == 0, first.stderr[-3000:]
        set_version(built.app, "v7")
        run = built.deploy()
    finally:
        fleet.config = config
    assert run.code == 0, run.stderr[-3000:]
    result = run.json()
    release = result["release"]
    assert result["build"]["host"] == "web3" and [host["host"] for host in result["hosts"]] == HOSTS
    assert {name: fleet.live_release(name, ROOT) for name in HOSTS} == {"web1": release, "web2": release}
    assert built.fleet.versions(HOSTS) == {"web1": "v7", "web2": "v7"}
    web3 = fleet.hosts["web3"]
    assert web3.path(f"{BOX_ROOT}/logs/build-{release}.log").is_file()
    # No retention ever runs on a box (nothing goes live there): it keeps only its newest build.
    assert [path.name for path in web3.path(f"{BOX_ROOT}/releases").iterdir()] == [release]
    assert not os.path.lexists(web3.path(f"{BOX_ROOT}/current")) and not web3.path(ROOT).exists()
    assert all(host["ship"]["bytes_sent"] < 0.10 * host["ship"]["release_bytes"] for host in result["hosts"])
    no_build_here(fleet)


def next_builds(fleet: Fleet, name: str) -> dict[int, str]:
    """The `next build` processes running on host ``name``."""
    return {pid: command for pid, command in fleet.leftovers(name).items() if "next build" in command}


def test_a_controller_killed_during_the_remote_build_stops_that_build_and_the_next_deploy_works(
        built: BuildFleet) -> None:
    """The controller is SIGKILLed while web1 runs `next build` for it: web1's build stops within seconds
    (its stdin closed: nothing builds for nobody, holding web1's build lock), and a deploy right after
    works. Meanwhile the controller showed web1's steps as they came, not once the build answered."""
    fleet = built.fleet
    assert fleet.config is not None
    before = set(fleet.leftovers("web1"))  # web1's app and PM2
    set_version(built.app, "v8")
    output = fleet.base / "killed-during-build.log"
    with output.open("wb") as sink:
        controller = subprocess.Popen([sys.executable, "-m", "nextdeploy", "deploy", "-c", str(fleet.config)],
                                      stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, env=tool_env(),
                                      start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not next_builds(fleet, "web1"):
            assert controller.poll() is None, f"the deploy ended before web1 built:\n{output.read_text()}"
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        shown = output.read_text()
        os.killpg(controller.pid, signal.SIGKILL)  # its ssh sessions, in sessions of their own, live on
        controller.wait(30)
        killed = time.monotonic()
        left = {pid: command for pid, command in fleet.leftovers("web1").items() if pid not in before}
        while left and time.monotonic() < killed + 10:
            time.sleep(0.2)
            left = {pid: command for pid, command in fleet.leftovers("web1").items() if pid not in before}
        print(f"web1's build gone {time.monotonic() - killed:.1f} s after its controller was killed")
        assert left == {}, left
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(30)
        stop_masters(fleet)
    # Streamed: web1's steps before its build ended (its install done, its `next build` started).
    assert re.search(r"^  web1: install dependencies.*\([0-9.]+ s\)$", shown, re.M), shown
    assert re.search(r"^  web1: \.\.\. build the app \(next build\)$", shown, re.M), shown
    run = built.deploy()
    assert run.code == 0, run.stderr[-3000:]
    assert built.fleet.versions(HOSTS) == {"web1": "v8", "web2": "v8"}


def test_a_build_box_another_fleet_builds_on_is_locked_and_left_alone(built: BuildFleet) -> None:
    """Another fleet deploys with the same build box and root (it holds the box's fleet lock, as its
    controller's `host lock` does): this deploy is refused at the box, exit 12, naming the holder, before it
    sends the box its config or its source (which would overwrite the other fleet's mid-build)."""
    fleet = built.fleet
    config = fleet.config
    web3 = fleet.hosts["web3"]
    fleet.config = box_config(fleet)
    try:
        fleet.nextdeploy("setup").expect_ok()  # done by the test before when not run alone
        sent = [web3.path(f"{BOX_ROOT}/{name}") for name in ("nextdeploy.toml", "source")]
        before = {path: path.stat().st_mtime_ns if path.exists() else None for path in sent}
        other, _ = take_host_lock(web3.path(BOX_ROOT), "web3", "`nextdeploy deploy` by ci on staging (pid 1234)")
        set_version(built.app, "v9")
        try:
            run = built.deploy()
        finally:
            other.release()
    finally:
        fleet.config = config
    assert run.code == ExitCode.LOCKED, run.stderr[-3000:]
    line = only_error_line(run)
    assert line.startswith("error: the fleet is locked on web3 by `nextdeploy deploy` by ci on staging (pid 1234), "
                           "since "), line
    assert line.endswith("(fix: wait for it to finish, then run the command again)"), line
    assert {path: path.stat().st_mtime_ns if path.exists() else None for path in sent} == before
    for name in HOSTS:  # the hosts' fleet locks it took were released
        lock, _ = take_host_lock(fleet.hosts[name].path(ROOT), name, "this test")
        lock.release()


def test_a_git_url_source_is_fetched_and_built_by_the_build_host(built: BuildFleet) -> None:
    """[app] source a git URL: web1 fetches it itself (here file:///srv/gitsrc/app.git, a bare repo in web1's
    own /srv, which neither this machine's nor web2's /srv holds) into its mirror, builds the ref's commit,
    and the release is shipped on to web2."""
    fleet = built.fleet
    config = fleet.config
    assert config is not None
    set_version(built.app, "v10")
    git(built.app, "commit", "--quiet", "-am", "v10")
    commit = git(built.app, "rev-parse", "HEAD").strip()
    branch = git(built.app, "rev-parse", "--abbrev-ref", "HEAD").strip()
    set_version(built.app, "v11-uncommitted")  # the work tree here is not what is built
    bare = fleet.hosts["web1"].path("/srv/gitsrc/app.git")
    git(built.app, "clone", "--quiet", "--bare", str(built.app), str(bare))
    text = config.read_text()
    assert f'source = "{built.app}"\n' in text, text
    fleet.config = fleet.base / "git.toml"
    fleet.config.write_text(text.replace(f'source = "{built.app}"\n',
                                         f'source = "file:///srv/gitsrc/app.git"\nref = "{branch}"\n'))
    try:
        run = built.deploy()
    finally:
        fleet.config = config
    assert run.code == 0, run.stderr[-3000:]
    result = run.json()
    assert result["build"]["host"] == "web1" and result["build"]["source_bytes_sent"] is None
    assert result["build"]["revision"] == commit
    assert built.fleet.versions(HOSTS) == {"web1": "v10", "web2": "v10"}
    assert fleet.hosts["web1"].path(f"{ROOT}/cache/git-mirror").is_dir()
    assert built.revision("web2", result["release"]) == commit
