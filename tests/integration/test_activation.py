"""Issue 3: zero lost requests under load, broken releases rejected before the switch, rollback,
retention, the lock. Real node, real pm2, real `next build`, aiohttp load on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.host.probe import http_get
from nextdeploy.host.procs import processes_under
from support.site import Run, Site, tool_env

pytest.importorskip("aiohttp")
from nextdeploy.demo.loadgen import LoadResult
from support.load import load_on as under_load
from support.load import no_failures as assert_no_failures

pytestmark = pytest.mark.integration

def worker_releases(site: Site) -> list[str]:
    status = site.nextdeploy("status", "--json")
    assert status.code == 0, status.output
    return [worker["release"] for worker in status.json()["workers"]]


@pytest.mark.parametrize("mode", ["keepalive", "new-connection"])
def test_redeploy_under_load_loses_no_request(site: Site, mode: str) -> None:
    first = site.deploy()
    assert first.code == 0, first.output
    v1 = site.current()
    site.set_version("v2")
    with under_load(site, mode) as box:
        second = site.deploy()
    assert second.code == 0, second.output
    load: LoadResult = box["load"]
    assert_no_failures(load)
    v2 = site.current()
    assert v2 != v1
    # Both releases answered during the deploy, and only the new one once it returned.
    seen = load.releases_seen()
    assert seen[v1] > 0 and seen[v2] > 0, seen
    assert worker_releases(site) == [v2, v2]
    assert {site.get()[2]["x-nextdeploy-release"] for _ in range(8)} == {v2}
    assert site.version() == "v2"


BROKEN = [
    ("crash-at-boot", "exited with code"),
    ("never-listens", "not healthy within"),
    ("health-500", "answered 500"),
    ("exit-after-3s", "stability window"),
]


def test_broken_releases_never_take_traffic_and_rollback_skips_them(site: Site) -> None:
    site.write_config(health={"timeout": 8, "stable_for": 4})
    site.deploy().expect_ok()
    v1 = site.current()
    site.set_version("v2")
    site.deploy().expect_ok()
    v2 = site.current()
    failed_ids = []
    for variant, reason in BROKEN:
        site.set_version("v3", variant)
        with under_load(site) as box:
            result = site.deploy()
        assert result.code == ExitCode.PREFLIGHT_FAILED, result.output
        assert reason in result.output and "Traceback" not in result.output, result.output
        assert result.output.strip().splitlines()[-1].startswith("error: ")
        assert_no_failures(box["load"])
        assert box["load"].releases_seen().keys() == {v2}
        assert site.current() == v2
        failed_ids.append(site.log_events()[-1]["release"])
        # Its workers (held under PM2 beside the old ones) are gone, none left behind by PM2.
        assert not processes_under(site.root / "releases" / failed_ids[-1])
        assert worker_releases(site) == [v2, v2]
    statuses = {r["id"]: r["status"] for r in site.releases()}
    assert all(statuses[release_id] == "failed" for release_id in failed_ids), statuses

    # Rollback goes to the last good release, never to one of the failed ones.
    with under_load(site, path="/") as box:
        rolled = site.nextdeploy("rollback")
    assert rolled.code == 0, rolled.output
    assert_no_failures(box["load"])
    assert site.current() == v1 and site.version() == "v1"
    assert worker_releases(site) == [v1, v1]
    for release_id in failed_ids:
        refused = site.nextdeploy("rollback", "--to", release_id)
        assert refused.code in (ExitCode.ROLLBACK_FAILED, ExitCode.NOT_FOUND), refused.output
    assert site.current() == v1


def test_retention_keeps_n_good_releases_and_never_the_live_one_or_its_target(site: Site) -> None:
    site.write_config(releases={"keep": 2}, health={"stable_for": 1})
    ids = []
    installs = []
    for version in ("v1", "v2", "v3"):
        if version == "v3":  # an install input changes: the cached node_modules must not be used
            package = site.app_dir / "package.json"
            package.write_text(package.read_text().replace('"private"', '"description": "v3", "private"', 1))
        result = site.deploy(version)
        assert result.code == 0, result.output
        installs.append("install dependencies (pnpm " in result.output)
        ids.append(site.current())
    assert installs == [True, False, True]  # v2: same inputs as v1, node_modules reused
    on_disk = {p.name for p in (site.root / "releases").iterdir()}
    assert on_disk == {ids[1], ids[2]}
    # v1 went to trash/ at once (renamed); the next deploy deletes it during its build.
    assert [p.name for p in (site.root / "trash").iterdir()] == [ids[0]]
    # Its build and preflight logs (a first deploy's preflight runs outside PM2) went with it; the kept stay.
    assert [p.name for p in (site.root / "logs").glob(f"*{ids[0]}*")] == []
    assert all((site.root / "logs" / f"build-{release_id}.log").is_file() for release_id in ids[1:])
    assert {p.name for p in (site.root / "trash" / ids[0]).glob("*.log")} == {f"build-{ids[0]}.log",
                                                                               f"preflight-{ids[0]}.log"}

    # Roll back to v2; then a new deploy must keep itself and v2 (its rollback target), dropping v3.
    assert site.nextdeploy("rollback").code == 0
    assert site.current() == ids[1]
    site.write_config(releases={"keep": 2}, health={"stable_for": 1}, app={"reuse_dependencies": False})
    fourth = site.deploy("v4")
    assert fourth.code == 0 and "install dependencies (pnpm " in fourth.output, fourth.output
    v4 = site.current()
    on_disk = {p.name for p in (site.root / "releases").iterdir()}
    assert on_disk == {v4, ids[1]}, on_disk
    assert [p.name for p in (site.root / "trash").iterdir()] == [ids[2]]  # v1 deleted, v3 the latest removed
    rolled = site.nextdeploy("rollback")
    assert rolled.code == 0, rolled.output
    assert site.current() == ids[1]


@contextmanager
def deploy_paused_at(site: Site, checkpoint: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """A deploy in the background, once it paused at ``checkpoint``; killed at the end if still running."""
    env = {**tool_env(), "NEXTDEPLOY_TEST_PAUSE_AT": checkpoint, **env}
    process = subprocess.Popen([sys.executable, "-m", "nextdeploy", "deploy", "-c", str(site.config_path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if f"paused at {checkpoint}" in line:
                break
        yield process
    finally:
        process.kill()
        process.wait()


def test_two_deploys_at_once_exactly_one_proceeds(site: Site) -> None:
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    with deploy_paused_at(site, "assembled") as holder:
        second: Run = site.nextdeploy("deploy", "--lock-timeout", "1")
        assert second.code == ExitCode.LOCKED, second.output
        assert f"pid {holder.pid}" in second.output and "nextdeploy deploy" in second.output
    third = site.deploy("v2")
    assert third.code == 0, third.output
    assert f"took over the lock of an interrupted run: pid {holder.pid}" in third.output
    assert site.version() == "v2"


def test_a_rollback_does_not_wait_for_a_build(site: Site, tmp_path: Path) -> None:
    # The live release has a bug that no gate saw; its fix is building (minutes, in real apps): the rollback
    # must go through now, and the fix go live after it.
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()
    site.deploy("v2").expect_ok()
    resume = tmp_path / "resume"
    site.set_version("v3")
    with deploy_paused_at(site, "assembled", NEXTDEPLOY_TEST_RESUME_FILE=str(resume)) as fix:
        assert site.nextdeploy("status", "--json").json()["deploy_running"]["pid"] == fix.pid
        started = time.monotonic()
        rolled = site.nextdeploy("rollback")
        assert rolled.code == 0, rolled.output
        assert time.monotonic() - started < 30
        assert site.current() == v1 and site.version() == "v1"
        building = [p for p in (site.root / "releases").iterdir() if p.name != v1]
        assert len(building) == 2  # v2 and the fix being built: the rollback left the build alone
        resume.touch()
        out, err = fix.communicate(timeout=300)
    assert fix.returncode == 0, out + err
    assert "the live release changed during the build" in out + err and f"replacing {v1}" in out + err
    assert site.version() == "v3" and worker_releases(site) == [site.current()] * 2
    assert site.nextdeploy("status", "--json").json()["deploy_running"] is None


def test_held_cutover_new_workers_take_no_request_until_proven_then_take_over(site: Site, tmp_path: Path) -> None:
    """A code-only deploy boots the new release's workers under PM2 beside the old ones, off the public port,
    probes them on their private ports through the stability window, then lets the very same workers in."""
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()
    old_pids = sorted(w["pid"] for w in site.nextdeploy("status", "--json").json()["workers"])
    site.set_version("v2")
    resume = tmp_path / "resume"
    with under_load(site, "keepalive") as box:
        with deploy_paused_at(site, "held", NEXTDEPLOY_TEST_RESUME_FILE=str(resume)) as deploy:
            v2 = site.log_events()[-1]["release"]
            held_dir = site.root / "releases" / v2 / ".nextdeploy" / "held"
            deadline = time.monotonic() + 60
            while len(list(held_dir.glob("*"))) < 2:
                assert time.monotonic() < deadline, "the new workers never held"
                time.sleep(0.1)
            held_pids = sorted(int(path.name) for path in held_dir.iterdir())
            assert sorted(worker_releases(site)) == sorted([v1, v1, v2, v2])
            # One new worker boots first; the other is started once it answered (held/<pid> written then).
            jlist = json.loads(site.pm2("jlist").stdout)
            started = {entry["pid"]: entry["pm2_env"]["pm_uptime"] / 1000 for entry in jlist}
            first, second = sorted(held_pids, key=started.__getitem__)
            assert started[second] >= (held_dir / str(first)).stat().st_mtime - 0.01
            assert {site.get()[2]["x-nextdeploy-release"] for _ in range(20)} == {v1}
            for path in held_dir.iterdir():  # each held worker answers on its private port, from v2
                answer = http_get("127.0.0.1", int(path.read_text()), "/api/health", 5)
                assert answer.status == 200 and answer.release == v2, answer
            assert {site.get()[2]["x-nextdeploy-release"] for _ in range(20)} == {v1}
            resume.touch()
            out, err = deploy.communicate(timeout=120)
        assert deploy.returncode == 0, out + err
    assert "switch traffic -> " in out + err
    assert_no_failures(box["load"])
    status = site.nextdeploy("status", "--json").json()
    assert sorted(w["pid"] for w in status["workers"]) == held_pids  # the proven workers serve: no second boot
    assert not set(held_pids) & set(old_pids)
    assert [w["release"] for w in status["workers"]] == [v2, v2]
    assert not list(held_dir.glob("*"))
    assert {site.get()[2]["x-nextdeploy-release"] for _ in range(8)} == {v2}
    deadline = time.monotonic() + 15  # the old workers drain, then exit
    while processes_under(site.root / "releases" / v1):
        assert time.monotonic() < deadline, "the old workers did not exit"
        time.sleep(0.1)


def test_a_slow_booting_release_goes_live_without_failed_requests(site: Site) -> None:
    # Each worker of this release needs 10 s before it can answer: no connection may be routed to it
    # before then (the launcher only opens the public port once the worker answers).
    site.write_config(health={"timeout": 20, "stable_for": 1})
    site.deploy().expect_ok()
    site.set_version("v2", "slow-start")
    with under_load(site, "new-connection") as box:
        result = site.deploy()
    assert result.code == 0, result.output
    assert_no_failures(box["load"])
    assert site.version() == "v2"
