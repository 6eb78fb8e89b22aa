"""Issue 3: a failure after the switch rolls back by itself; stop, start, logs, and surviving a PM2 restart."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.pm2 import rpc as pm2rpc
from nextdeploy.pm2.client import parse_jlist
from support.site import Site

pytestmark = pytest.mark.integration

# Healthy when run alone (the preflight), crashes under PM2: stands in for "works on my port,
# breaks in production" (a production-only env var, a port conflict, a PM2-only code path).
CRASH_UNDER_PM2 = """export async function register() {
  if (process.env.NEXT_RUNTIME === "nodejs" && process.env.pm_id !== undefined) {
    console.error("example: crashing under PM2 on purpose");
    process.exit(1);
  }
}
"""


def test_a_release_that_fails_only_under_pm2_never_takes_traffic(site: Site) -> None:
    """A code-only deploy proves the release on the workers that will serve (the held cut-over): a crash
    that only happens under PM2 is a rejection before any request; the old workers never noticed."""
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    good = site.current()
    old_pids = sorted(w["pid"] for w in site.nextdeploy("status", "--json").json()["workers"])
    site.set_version("v2")
    (site.app_dir / "instrumentation.js").write_text(CRASH_UNDER_PM2)
    result = site.deploy()
    assert result.code == ExitCode.PREFLIGHT_FAILED, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: a new worker (PM2 id ") and "exited with code 1 before answering" in last, last
    assert "the workers' error log since the new workers started" in result.stderr, result.stderr
    assert "crashing under PM2 on purpose" in result.stderr, result.stderr
    assert site.current() == good and site.version() == "v1"
    status = site.nextdeploy("status", "--json").json()
    assert sorted(w["pid"] for w in status["workers"]) == old_pids  # untouched
    assert [w["release"] for w in status["workers"]] == [good, good] and status["healthy"]
    assert not status["lost_workers"] and not status["draining_workers"]
    events = [(e["event"], e["release"]) for e in site.log_events()][-2:]
    failed = events[0][1]
    assert events == [("switching", failed), ("failed", failed)]
    assert {r["id"]: r for r in site.releases()}[failed]["reason"].startswith("preflight: a new worker")


def test_failure_after_the_switch_rolls_back_automatically(site: Site) -> None:
    # A config change goes through the preflight (outside PM2, where this release is healthy), the switch
    # and PM2's reload: the crash shows only after the switch, and the previous release is put back.
    site.write_config(server={"listen_timeout": 4000}, health={"stable_for": 1})
    site.deploy().expect_ok()
    good = site.current()
    site.write_config(server={"listen_timeout": 4000, "env": {"GREETING": "hi"}}, health={"stable_for": 1})
    site.set_version("v2")
    (site.app_dir / "instrumentation.js").write_text(CRASH_UNDER_PM2)
    result = site.deploy()
    assert result.code == ExitCode.ROLLED_BACK, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: release ") and f"rolled back to {good}" in last, last
    # Above it, why: the workers' own words since the switch.
    assert "the workers' error log since the switch" in result.stderr, result.stderr
    assert "| " in result.stderr and "crashing under PM2 on purpose" in result.stderr, result.stderr
    assert site.current() == good and site.version() == "v1"
    status = site.nextdeploy("status", "--json").json()
    assert [w["release"] for w in status["workers"]] == [good, good]
    assert all(w["status"] == "online" for w in status["workers"]) and status["healthy"]
    events = [(e["event"], e["release"]) for e in site.log_events()][-3:]
    failed = events[0][1]
    # "failed" comes once the previous release is back: a run killed before leaves the switch pending.
    assert events == [("switching", failed), ("rolled_back", good), ("failed", failed)]
    assert {r["id"]: r["status"] for r in site.releases()}[failed] == "failed"


def test_stop_logs_and_pm2_resurrect(site: Site) -> None:
    site.write_config(health={"stable_for": 1})
    nothing = site.nextdeploy("start")
    assert nothing.code == ExitCode.NOT_FOUND, nothing.output
    assert nothing.stderr.strip().endswith("nothing to start (fix: run `nextdeploy deploy`)"), nothing.stderr
    site.deploy().expect_ok()
    live = site.current()

    logs = site.nextdeploy("logs", "--lines", "20")
    assert logs.code == 0 and "ready in" in logs.output  # the launcher's line, time-stamped by PM2

    # nextdeploy reads the process list from the daemon's socket: the very list `pm2 jlist` prints.
    def summary(entries: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(e["pm_id"], e["pid"], e["name"], e["pm2_env"]["status"]) for e in entries]  # type: ignore[index]
    from_socket = summary(pm2rpc.process_list(site.pm2_home))
    assert from_socket == summary(parse_jlist(site.pm2("jlist").stdout)) and len(from_socket) == 2

    # nextdeploy wrote the dump itself (from the socket): what `pm2 save` writes, but for values that
    # change by the second (metrics). The reboot below resurrects from nextdeploy's own dump.
    dump = site.pm2_home / "dump.pm2"
    ours = dump.read_text()
    assert site.pm2("save", "--force").returncode == 0
    theirs = json.loads(dump.read_text())
    dump.write_text(ours)
    assert len(json.loads(ours)) == len(theirs) == 2

    def stable(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in e.items() if k not in ("axm_monitor",)} for e in entries]
    assert stable(json.loads(ours)) == stable(theirs)

    # A reboot, as PM2 sees it: the daemon dies, `pm2 resurrect` restores the saved process list.
    site.pm2("kill")
    with pytest.raises(pm2rpc.RpcUnavailable):  # no daemon: nextdeploy falls back to the CLI
        pm2rpc.process_list(site.pm2_home)
    resurrect = site.pm2("resurrect")
    assert resurrect.returncode == 0, resurrect.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if site.get()[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    assert site.get()[2]["x-nextdeploy-release"] == live

    # A reboot without `pm2 startup`: `status` says nothing serves, without starting a daemon itself
    # (the pm2 command would); `start` serves the live release again, no build; a second one does nothing.
    site.pm2("kill")
    down = site.nextdeploy("status")
    assert down.code == 0, down.output
    assert "PM2's daemon is not running" in down.output and f"nothing serves {live}: `nextdeploy start`" in down.output
    assert site.nextdeploy("status", "--json").json()["pm2_daemon_running"] is False
    assert not (site.pm2_home / "pm2.pid").exists()
    started = site.nextdeploy("start", "--json")
    assert started.code == 0, started.output
    assert started.json()["release"] == live and started.json()["already_serving"] is False
    # Scripts read steps by their stable names (nextdeploy.core.steps), on stderr and in the result.
    assert "start-live" in [step["name"] for step in started.json()["steps"]], started.json()
    assert f"ok  [start-live] start the live release {live} (" in started.stderr, started.stderr
    assert site.get()[2]["x-nextdeploy-release"] == live
    assert [w["release"] for w in site.nextdeploy("status", "--json").json()["workers"]] == [live, live]
    again = site.nextdeploy("start")
    assert again.code == 0 and f"{live} is serving already" in again.output, again.output

    stopped = site.nextdeploy("stop")
    assert stopped.code == 0, stopped.output
    assert site.nextdeploy("status", "--json").json()["workers"] == []
    with pytest.raises(OSError):
        site.get(timeout=2)
    assert site.current() == live and (site.root / "releases" / str(live)).is_dir()

    # A live release that cannot start any more (here: its server.js gone) fails `start` in one line, with
    # the workers' own words above it.
    server_js = site.root / "releases" / str(live) / "server.js"
    server_js.rename(server_js.with_name("server.js.away"))
    broken = site.nextdeploy("start")
    assert broken.code == ExitCode.PM2, broken.output
    assert f"error: the live release {live} did not start: " in broken.stderr, broken.stderr
    assert "Cannot find module" in broken.stderr, broken.stderr
    server_js.with_name("server.js.away").rename(server_js)
    # PM2 is still retrying it, now with its server.js back. A worker it restarts while `pm2 delete` runs can
    # outlive the delete, outside PM2's list but still on the port (2 runs in 6 before stop ended those too).
    assert site.nextdeploy("stop").code == 0
    time.sleep(1)
    with pytest.raises(OSError):
        site.get(timeout=2)

    # The next deploy starts the app again from scratch.
    redeployed = site.deploy("v2")
    assert redeployed.code == 0, redeployed.output
    assert site.version() == "v2"


def _reload_events(site: Site, offset: int) -> list[str]:
    """The worker starts and stops PM2 logged after byte ``offset`` of its log, in order."""
    events = []
    for line in site.pm2_log_since(offset).splitlines():
        if started := re.search(r"App \[hello:(\d+)\] starting in", line):
            events.append(f"start {started[1]}")
        elif stopped := re.search(r"Stopping app:hello id:(?:_old_)?(\d+)", line):
            events.append(f"stop {stopped[1]}")
    return events


def _deploy_and_watch_reload(site: Site, version: str) -> list[str]:
    site.set_version(version)
    planned = _dry_run_step_names(site)
    offset = site.pm2_log_size()
    result = site.deploy(None, "good", "--json")
    assert result.code == 0, result.output
    assert site.version() == version
    # Issue 22: the dry run is the deploy's own step list: every step the deploy reports, in order.
    assert [step["name"] for step in result.json()["steps"]] == planned, (planned, result.json()["steps"])
    return _reload_events(site, offset)


def _dry_run_step_names(site: Site) -> list[str]:
    """The step names ``deploy --dry-run --json`` says the deploy will report (changing nothing)."""
    def releases() -> list[str]:
        return sorted(path.name for path in (site.root / "releases").glob("*"))

    before = releases()
    planned = site.nextdeploy("deploy", "--dry-run", "--json")
    assert planned.code == 0, planned.output
    assert releases() == before
    return [name for step in planned.json()["steps"] for name in step["names"]]


def test_code_only_deploys_boot_new_workers_beside_the_old_and_env_changes_go_through_the_ecosystem(
        site: Site) -> None:
    site.write_config(health={"stable_for": 1}, releases={"keep": 3})
    planned = _dry_run_step_names(site)
    first = site.deploy(None, "good", "--json")
    first.expect_ok()
    assert [step["name"] for step in first.json()["steps"]] == planned, (planned, first.json()["steps"])

    # Only the release changes: the held cut-over starts two new workers beside the old ones, then deletes
    # the old ones (no reload: PM2 parks no `_old_` worker).
    events = _deploy_and_watch_reload(site, "v2")
    assert sorted(events[:2]) == ["start 2", "start 3"] and sorted(events[2:]) == ["stop 0", "stop 1"], events

    # A config change reloads from the ecosystem file (one worker at a time) and the new env is applied.
    site.write_config(health={"stable_for": 1}, server={"env": {"GREETING": "hi"}})
    assert _deploy_and_watch_reload(site, "v3") == ["start 2", "stop 2", "start 3", "stop 3"]
    assert [e["pm2_env"]["env"].get("GREETING") for e in pm2rpc.process_list(site.pm2_home)] == ["hi", "hi"]

    # So does a rotated secret: the ecosystem file is the same, the key it reads is not.
    key_file = site.root / "shared" / "server-actions.key"
    new_key = base64.b64encode(bytes(range(32))).decode()
    key_file.write_text(new_key + "\n")
    assert _deploy_and_watch_reload(site, "v4") == ["start 2", "stop 2", "start 3", "stop 3"]
    workers = pm2rpc.process_list(site.pm2_home)
    assert [e["pm2_env"]["env"]["NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"] for e in workers] == [new_key, new_key]

    # Back to code-only deploys: held again; the duplicates keep the env PM2 runs (the new key).
    events = _deploy_and_watch_reload(site, "v5")
    assert sorted(events[:2]) == ["start 4", "start 5"] and sorted(events[2:]) == ["stop 2", "stop 3"], events
    # (the old workers may still be listed, PM2 stopping them as they drain)
    workers = [e for e in pm2rpc.process_list(site.pm2_home) if e["pm2_env"]["status"] != "stopping"]
    assert [e["pm2_env"]["env"]["NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"] for e in workers] == [new_key, new_key]

    # A rollback goes by the held cut-over too: the target's workers are checked beside the live ones first.
    offset = site.pm2_log_size()
    rolled = site.nextdeploy("rollback")
    assert rolled.code == 0, rolled.output
    assert site.version() == "v4"
    events = _reload_events(site, offset)
    assert sorted(events[:2]) == ["start 6", "start 7"] and sorted(events[2:]) == ["stop 4", "stop 5"], events
