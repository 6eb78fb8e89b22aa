"""Issue 3: a deploy SIGKILLed at any step leaves a healthy release serving, and the next deploy works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nextdeploy.host.procs import processes_under
from support.processes import as_in_a_terminal
from support.site import Site, tool_env

pytestmark = pytest.mark.integration


def start_deploy(site: Site, pause_at: str | None = None) -> subprocess.Popen[str]:
    env = tool_env()
    if pause_at:
        env["NEXTDEPLOY_TEST_PAUSE_AT"] = pause_at
    return subprocess.Popen([sys.executable, "-m", "nextdeploy", "deploy", "-c", str(site.config_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_in_a_terminal)


def wait_for_pause(deploy: subprocess.Popen[str], name: str) -> None:
    assert deploy.stderr is not None
    seen = []
    for line in deploy.stderr:
        if f"paused at {name}" in line:
            return
        seen.append(line)
    raise AssertionError(f"the deploy ended without reaching {name}: {''.join(seen[-15:])}")


def wait_for_child(deploy: subprocess.Popen[str], needle: str, timeout: float = 120) -> None:
    """Wait until the deploy has a child process whose command line contains ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == deploy.pid and needle in cmdline:
                return
        assert deploy.poll() is None, "the deploy ended before the step to interrupt"
        time.sleep(0.05)
    raise AssertionError(f"no `{needle}` child within {timeout} s")


def wait_for_pm2_log(deploy: subprocess.Popen[str], site: Site, offset: int, needle: str,
                     timeout: float = 120) -> None:
    """Wait until PM2's daemon logs ``needle`` after byte ``offset`` of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in site.pm2_log_since(offset):
            return
        assert deploy.poll() is None, "the deploy ended before the step to interrupt"
        time.sleep(0.05)
    raise AssertionError(f"PM2 did not log {needle!r} within {timeout} s")


def kill(deploy: subprocess.Popen[str]) -> None:
    """SIGKILL the deploy process alone, as the OOM killer or a lost SSH session would."""
    os.kill(deploy.pid, signal.SIGKILL)
    deploy.wait()


def assert_serving_a_healthy_release(site: Site, allowed_versions: set[str]) -> None:
    current = site.current()
    assert current is not None
    release_dir = site.root / "releases" / current
    assert (release_dir / ".nextdeploy" / "manifest.json").exists()
    assert not (release_dir / ".nextdeploy-unfinished").exists()
    for _ in range(6):
        status, body, _headers = site.get("/api/health")
        assert status == 200 and '"status":"ok"' in body
        assert site.version() in allowed_versions


def test_sigkill_at_every_step_leaves_the_site_serving(site: Site) -> None:
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()

    # During `next build`.
    site.set_version("v2")
    deploy = start_deploy(site)
    wait_for_child(deploy, "run build")
    kill(deploy)
    time.sleep(1)
    assert_serving_a_healthy_release(site, {"v1"})

    # After assembly, before the preflight.
    site.set_version("v3")
    deploy = start_deploy(site, "assembled")
    wait_for_pause(deploy, "assembled")
    kill(deploy)
    assert_serving_a_healthy_release(site, {"v1"})

    # In the held cut-over's window (a code-only change): the new workers run under PM2 beside the old ones,
    # held off the public port. Only the old release answers, then and after the kill.
    site.set_version("v4")
    deploy = start_deploy(site, "held")
    wait_for_pause(deploy, "held")
    held = site.log_events()[-1]["release"]
    kill(deploy)
    assert_serving_a_healthy_release(site, {"v1"})
    assert site.version() == "v1"
    status = site.nextdeploy("status", "--json").json()
    assert sorted(w["release"] for w in status["workers"]) == sorted([v1] * 2 + [held] * 2), status["workers"]

    # Right after the approval: the new workers open the public port, the old ones are not deleted yet.
    # (The next run first deletes v4's held workers and puts v1 back in `current`.)
    site.set_version("v5")
    deploy = start_deploy(site, "approved")
    wait_for_pause(deploy, "approved")
    kill(deploy)
    assert_serving_a_healthy_release(site, {"v1", "v5"})

    # Right after the switch, before PM2 was told (a config change: preflight outside PM2, then a reload):
    # `current` is the new (preflight-checked) release, the workers still serve the old one.
    site.write_config(health={"stable_for": 1}, server={"env": {"GREETING": "hi"}})
    site.set_version("v6")
    deploy = start_deploy(site, "switched")
    wait_for_pause(deploy, "switched")
    kill(deploy)
    assert_serving_a_healthy_release(site, {"v1", "v6"})
    assert site.version() == "v1"

    # While the held workers boot (no pause: killed as PM2 starts them). Back to the config PM2 runs, so
    # this is a code-only change again.
    site.write_config(health={"stable_for": 1})
    site.set_version("v7")
    offset = site.pm2_log_size()
    deploy = start_deploy(site)
    wait_for_pm2_log(deploy, site, offset, "starting in -cluster mode")
    kill(deploy)
    time.sleep(2)
    assert_serving_a_healthy_release(site, {"v1"})

    # During `pm2 reload <ecosystem>`, which a config change goes through (once this run has repaired the
    # interrupted run above).
    site.write_config(health={"stable_for": 1}, server={"env": {"GREETING": "hi"}})
    site.set_version("v8")
    switches = [e for e in site.log_events() if e["event"] == "switching"]
    deploy = start_deploy(site)
    deadline = time.monotonic() + 120
    while [e for e in site.log_events() if e["event"] == "switching"] == switches:
        assert deploy.poll() is None and time.monotonic() < deadline, "the deploy never switched"
        time.sleep(0.05)
    wait_for_child(deploy, " reload ")
    kill(deploy)
    time.sleep(8)
    assert_serving_a_healthy_release(site, {"v1", "v8"})

    # The next deploy repairs whatever is half-done and succeeds.
    site.set_version("v9")
    result = site.deploy()
    assert result.code == 0, result.output
    assert "interrupted while activating" in result.output
    assert site.version() == "v9"
    status = site.nextdeploy("status", "--json").json()
    assert {w["release"] for w in status["workers"]} == {site.current()}
    assert len(status["workers"]) == 2 and all(w["status"] == "online" for w in status["workers"])
    on_disk = {p.name for p in (site.root / "releases").iterdir()}
    assert all(not (site.root / "releases" / name / ".nextdeploy-unfinished").exists() for name in on_disk)
    assert not any((site.root / "builds").iterdir())
    good = [r for r in site.releases() if r["status"] == "active"]
    assert [r["current"] for r in good][-1] is True


def stop_and_wait(deploy: subprocess.Popen[str], signum: int) -> tuple[int, list[str]]:
    deploy.send_signal(signum)
    _, err = deploy.communicate(timeout=120)
    return deploy.returncode, err.strip().splitlines()


def test_sigterm_or_sighup_cleans_up_like_ctrl_c(site: Site) -> None:
    """CI cancelling a job sends SIGTERM, a dropped SSH session SIGHUP: the run stops as it would on
    Ctrl-C, putting the previous release back if it was activating, and leaves nothing running."""
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    live = site.current()
    assert live is not None

    # Right after the switch (a config change: preflight outside PM2, switch, reload): the previous release is
    # put back before the command exits.
    site.write_config(health={"stable_for": 1}, server={"env": {"GREETING": "hi"}})
    site.set_version("v2")
    deploy = start_deploy(site, "switched")
    wait_for_pause(deploy, "switched")
    switched_to = site.log_events()[-1]["release"]
    code, err = stop_and_wait(deploy, signal.SIGTERM)
    assert code == 130, err
    assert err[-1] == f"error: interrupted by SIGTERM while activating {switched_to}; rolled back to {live}"
    assert site.current() == live and site.version() == "v1"
    assert not any("Traceback" in line for line in err)

    # A code-only change (PM2 runs this config now): the held cut-over, stopped while its new workers boot
    # beside the old ones. They are deleted; the old ones served throughout and still do.
    site.set_version("v3")
    old_pids = sorted(w["pid"] for w in site.nextdeploy("status", "--json").json()["workers"])
    offset = site.pm2_log_size()
    deploy = start_deploy(site)
    wait_for_pm2_log(deploy, site, offset, "starting in -cluster mode")
    held = [e for e in site.log_events() if e["event"] == "switching"][-1]["release"]
    code, err = stop_and_wait(deploy, signal.SIGTERM)
    assert code == 130, err
    assert err[-1] == (f"error: interrupted by SIGTERM while release {held} was held off the public port; its "
                       f"workers were deleted, {live} served throughout"), err
    assert site.current() == live
    assert_serving_a_healthy_release(site, {"v1"})
    status = site.nextdeploy("status", "--json").json()
    assert [w["release"] for w in status["workers"]] == [live, live]
    assert sorted(w["pid"] for w in status["workers"]) == old_pids
    assert all(w["status"] == "online" for w in status["workers"])
    failed = {r["id"]: r for r in site.releases() if r["status"] == "failed"}
    assert failed[switched_to]["reason"] == "after the switch: interrupted by SIGTERM"
    assert failed[held]["reason"] == "preflight: interrupted by SIGTERM"
    assert not processes_under(site.root / "releases" / held)

    # During `next build` (in its own session, so the hang-up never reached it): nothing keeps building.
    site.set_version("v4")
    deploy = start_deploy(site)
    wait_for_child(deploy, "run build")
    building = site.log_events()[-1]["release"]
    code, err = stop_and_wait(deploy, signal.SIGHUP)
    assert code == 130, err
    assert err[-1] == f"error: interrupted by SIGHUP before release {building} went live; nothing live changed"
    time.sleep(0.5)
    assert not processes_under(site.root / "builds")
    assert_serving_a_healthy_release(site, {"v1"})

    # Nothing was left half-done: the next deploy has nothing to repair.
    site.set_version("v5")
    result = site.deploy()
    assert result.code == 0, result.output
    assert "interrupted while activating" not in result.output
    assert site.version() == "v5"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_what_a_killed_deploy_started_is_stopped_by_the_next_command(site: Site) -> None:
    """Issue 21: a deploy SIGKILLed in its preflight left the preflight server running for good (serving a
    release that may be deleted, with the app's secrets in its env), one killed during `next build` left its
    release 'unfinished' in `releases` forever. `status` shows such processes; the next command stops them
    and closes the release's record."""
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    live = site.current()
    (site.root / ".nextdeploy-root").unlink()  # a root an earlier version made: adopted as it goes

    # A config change is preflighted outside PM2, on a private port: killed there, its server runs on.
    site.write_config(health={"stable_for": 1}, server={"env": {"GREETING": "hi"}})
    site.set_version("v2")
    deploy = start_deploy(site, "preflight")
    wait_for_pause(deploy, "preflight")
    preflighted = [e for e in site.log_events() if e["event"] == "built"][-1]["release"]
    kill(deploy)
    assert (site.root / ".nextdeploy-root").is_file()
    servers = processes_under(site.root / "releases" / preflighted)
    assert servers and all(running(pid) for pid in servers)
    status = site.nextdeploy("status", "--json").json()
    assert set(servers) <= set(status["leftover_processes"]), status
    text = site.nextdeploy("status").output
    assert "process(es) an interrupted deploy started still run" in text, text

    # The next command stops it: here `stop` (a deploy, rollback or start do too, below).
    site.nextdeploy("stop").expect_ok()
    assert not any(running(pid) for pid in servers)

    # Killed during `next build`: the release dir did not exist yet, only the log knows the release, and the
    # install/build processes run on. (The deploy first started the stopped app again.)
    site.set_version("v3")
    deploy = start_deploy(site)
    wait_for_child(deploy, "run build")
    building = site.log_events()[-1]["release"]
    kill(deploy)
    assert not (site.root / "releases" / building).exists()
    assert {r["id"]: r["status"] for r in site.releases()}[building] == "unfinished"
    builders = processes_under(site.root / "builds")
    assert builders and set(builders) <= set(site.nextdeploy("status", "--json").json()["leftover_processes"])

    # The next command (here `start`, which finds the app serving) stops them and closes the record.
    site.nextdeploy("start").expect_ok()
    assert not any(running(pid) for pid in builders)
    assert building not in {r["id"] for r in site.releases()}
    assert [r for r in site.releases() if r["status"] == "unfinished"] == []
    assert site.nextdeploy("status", "--json").json()["leftover_processes"] == []
    assert site.current() == live and site.version() == "v1"
