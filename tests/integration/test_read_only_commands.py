"""Issue 20, item 8: ``status``, ``releases`` and ``logs`` change nothing on the host: no pm2 installed with
npm, no PM2 daemon started (any pm2 command would start one, with its banner); they say what is missing.
A fresh deploy root, never deployed to: no Next.js build here."""

from __future__ import annotations

import os
import shutil

import pytest

from support.site import Site

pytestmark = pytest.mark.integration


def test_read_only_commands_install_nothing_and_start_no_daemon(site: Site) -> None:
    node_dir = os.path.dirname(shutil.which("node") or "/usr/bin/node")
    without_pm2 = {"PATH": f"{node_dir}:/usr/bin:/bin"}  # npm is there: the old status installed pm2 with it
    assert shutil.which("pm2", path=without_pm2["PATH"]) is None
    pm2_files = set(os.listdir(site.pm2_home))

    status = site.nextdeploy("status", env=without_pm2).expect_ok()
    assert not (site.root / "tools").exists(), "status installed pm2"
    assert "pm2 is not installed" in status.output and "`nextdeploy deploy` installs it" in status.output
    assert site.nextdeploy("status", "--json", env=without_pm2).expect_ok().json()["pm2_installed"] is False
    releases = site.nextdeploy("releases", env=without_pm2).expect_ok()
    assert "no releases yet" in releases.output
    logs = site.nextdeploy("logs", env=without_pm2).expect_ok()
    assert "pm2 is not installed" in logs.output
    assert not site.root.exists()  # nothing written at all, not even the deploy root

    # pm2 installed, its daemon not running: the app's log files are shown as they are, no daemon started.
    (site.root / "logs").mkdir(parents=True)
    (site.root / "logs" / "pm2-hello.out.log").write_text("2026-12-06T00:00:00: [nextdeploy x] ready in 1 ms\n")
    logs = site.nextdeploy("logs", "-n", "5").expect_ok()
    assert "ready in 1 ms" in logs.output
    assert "PM2's daemon is not running" in logs.output and "PM2" + " v" not in logs.output
    followed = site.nextdeploy("logs", "-f").expect_ok()
    assert "nothing to follow" in followed.output
    status = site.nextdeploy("status", "--json").expect_ok().json()
    assert status["pm2_installed"] is True and status["pm2_daemon_running"] is False
    assert set(os.listdir(site.pm2_home)) == pm2_files  # no pm2.pid, no sockets, no logs: no daemon ran
