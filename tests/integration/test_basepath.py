"""Issue 20, item 5: an app built with a basePath is checked under it, a rollback target is checked before
traffic moves to it, and a put-back after a failed verify loses no request.
Real next builds, real pm2, bounded load on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.demo.exampleapp import set_base_path
from support.site import Site, tool_env

pytest.importorskip("aiohttp")
from integration.test_activation import assert_no_failures, deploy_paused_at, under_load, worker_releases
from integration.test_crash_safety import kill, start_deploy, stop_and_wait, wait_for_pause

pytestmark = pytest.mark.integration


def manifest(site: Site, release: str | None) -> dict[str, Any]:
    assert release is not None
    data: dict[str, Any] = json.loads((site.root / "releases" / release / ".nextdeploy" / "manifest.json").read_text())
    return data


def statuses(site: Site) -> dict[str, str]:
    return {r["id"]: r["status"] for r in site.releases()}


def test_a_base_path_release_is_probed_under_it_and_rollbacks_are_checked_first(site: Site) -> None:
    """The health path and smoke routes are probed under the build's basePath (the preflight, the launcher's
    readiness and warm-up) and recorded in the release's manifest. A rollback to it from a release without a
    basePath is checked first, on its recorded paths, beside the live workers; a rollback that would fail is
    refused with nothing live changed and neither release marked failed."""
    set_base_path(site.app_dir, "/b")
    site.write_config(health={"smoke": ["/", "/b/api/health?smoke=1"], "timeout": 10, "stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()
    assert manifest(site, v1)["checks"] == {"base_path": "/b", "health": "/b/api/health",
                                            "smoke": ["/b", "/b/api/health?smoke=1"]}
    status, body, _ = site.get("/b/api/health")
    assert status == 200 and '"status":"ok"' in body
    out_log = (site.root / "logs" / f"pm2-{site.app_name}.out.log").read_text()
    assert "(GET /b/api/health -> 200; warmed " in out_log, out_log
    assert site.nextdeploy("status", "--json").json()["healthy"] is True

    set_base_path(site.app_dir, None)
    site.deploy("v2").expect_ok()
    v2 = site.current()
    assert manifest(site, v2)["checks"] == {"base_path": "", "health": "/api/health",
                                            "smoke": ["/", "/b/api/health?smoke=1"]}

    # A rollback that would fail (v1's health no longer matches what [health] expects) is refused before
    # any traffic moves: exit 11, v2 served throughout, and neither release is marked failed.
    site.write_config(health={"smoke": ["/"], "timeout": 6, "stable_for": 1, "expect_body": '"version":"v2"'})
    with under_load(site, "new-connection") as box:
        refused = site.nextdeploy("rollback")
    assert refused.code == ExitCode.ROLLBACK_FAILED, refused.output
    assert f"rollback to {v1} refused" in refused.output and "nothing live changed" in refused.output, refused.output
    assert_no_failures(box["load"])
    assert box["load"].releases_seen().keys() == {v2}
    assert site.current() == v2 and worker_releases(site) == [v2, v2]
    assert statuses(site) == {v1: "active", v2: "active"}

    # Checked the same way, it goes live: v1 answers under /b again, without a failed request.
    site.write_config(health={"smoke": ["/"], "timeout": 10, "stable_for": 1})
    with under_load(site, "keepalive") as box:
        rolled = site.nextdeploy("rollback")
    assert rolled.code == 0, rolled.output
    assert f"check {v1} before traffic moves" in rolled.output, rolled.output
    assert_no_failures(box["load"])
    assert site.current() == v1 and worker_releases(site) == [v1, v1]
    assert site.get("/b/api/health")[0] == 200
    assert statuses(site) == {v1: "active", v2: "active"}

    # With a changed config (no held cut-over: PM2's env changes) the target is preflighted outside PM2 first.
    site.write_config(health={"timeout": 3, "stable_for": 1, "expect_body": '"version":"v1"'},
                      server={"env": {"GREETING": "hi"}})
    assert v2 is not None
    refused = site.nextdeploy("rollback", "--to", v2)
    assert refused.code == ExitCode.ROLLBACK_FAILED, refused.output
    assert f"check {v2} before traffic moves: health gate on a private port" in refused.output, refused.output
    assert f"rollback to {v2} refused" in refused.output and "nothing live changed" in refused.output
    assert site.current() == v1 and worker_releases(site) == [v1, v1]
    assert statuses(site) == {v1: "active", v2: "active"}

    # A rollback killed right after its switch: the next run puts v1 back, and v2 is not failed for good.
    site.write_config(health={"timeout": 10, "stable_for": 1}, server={"env": {"GREETING": "hi"}})
    env = {**tool_env(), "NEXTDEPLOY_TEST_PAUSE_AT": "switched"}
    killed = subprocess.Popen([sys.executable, "-m", "nextdeploy", "rollback", "--to", v2, "-c", str(site.config_path)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_pause(killed, "switched")
    kill(killed)
    site.nextdeploy("start").expect_ok()
    assert site.current() == v1 and worker_releases(site) == [v1, v1]
    assert statuses(site) == {v1: "active", v2: "active"}


def test_a_failed_verify_or_an_interrupt_puts_the_previous_release_back_without_losing_a_request(
        site: Site, tmp_path: Path) -> None:
    """A release that passed its window and took traffic, then failed verify (or the run was interrupted
    then): the previous release's workers start beside its workers and are let in once healthy. The page
    route never stops answering."""
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()
    site.set_version("v2", "health-fails-on-file")
    resume = tmp_path / "resume"
    with under_load(site, "new-connection", path="/") as box:
        with deploy_paused_at(site, "approved", NEXTDEPLOY_TEST_RESUME_FILE=str(resume)) as deploy:
            v2 = site.log_events()[-1]["release"]
            # Traffic moves to v2 now; its health fails from here on (the page still renders).
            (site.root / "releases" / v2 / manifest(site, v2)["app_rel"] / "health-fails").touch()
            resume.touch()
            out, err = deploy.communicate(timeout=240)
        assert deploy.returncode == ExitCode.ROLLED_BACK, out + err
    assert f"put {v1} back: its workers start beside {v2}'s" in out + err, out + err
    assert_no_failures(box["load"])
    seen = box["load"].releases_seen()
    assert seen[v1] > 0 and seen[v2] > 0, seen
    assert site.current() == v1 and worker_releases(site) == [v1, v1]
    assert statuses(site) == {v1: "active", v2: "failed"}
    assert {site.get()[2]["x-nextdeploy-release"] for _ in range(8)} == {v1}

    # Interrupted right after traffic moved (SIGTERM, as Ctrl-C): the same put-back, before the command exits.
    site.set_version("v3")
    with under_load(site, "keepalive", path="/") as box:
        deploy = start_deploy(site, "approved")
        wait_for_pause(deploy, "approved")
        v3 = site.log_events()[-1]["release"]
        stopped = time.monotonic()
        code, err = stop_and_wait(deploy, signal.SIGTERM)
        put_back_seconds = time.monotonic() - stopped
    assert code == ExitCode.INTERRUPTED, err
    # v1's workers never stopped serving: v3's are deleted at once, not after waiting out a drain of v1's
    # workers that never began (kill_timeout + 2 s = 12 s) and a reload.
    print(f"put back in {put_back_seconds:.1f} s")
    assert put_back_seconds < 9, put_back_seconds
    assert err[-1] == f"error: interrupted by SIGTERM while activating {v3}; rolled back to {v1}", err
    assert_no_failures(box["load"])
    assert site.current() == v1 and worker_releases(site) == [v1, v1]
    put_back, failed = site.log_events()[-2:]
    assert (put_back["event"], put_back["release"], put_back["from"]) == ("rolled_back", v1, v3)
    assert (failed["event"], failed["release"]) == ("failed", v3)
    assert failed["reason"] == "after the switch: interrupted by SIGTERM"
