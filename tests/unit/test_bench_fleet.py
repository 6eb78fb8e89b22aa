"""The fleet bench's figures (benchkit.fleetfigures) and its memory sampling (benchkit.procmem): what each
process counts as, the peaks, the phases of a deploy from its JSON, the ratios against the targets."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from nextdeploy.benchkit.fleetfigures import deploy_figures, gaps, markdown, phases, summary
from nextdeploy.benchkit.procmem import (
    Proc,
    Sampler,
    SubjectPeak,
    add_sample,
    control_dirs,
    controller_kind,
    descendants,
    host_kind,
    process_table,
)

MB = 1_000_000
ROOT = "/srv/bench-fleet"
TOOL = f"{ROOT}/tools/nextdeploy-0.1.0/bin"


@pytest.mark.parametrize(("command", "kind"), [
    (f"{TOOL}/python {TOOL}/nextdeploy host lock --holder x", "nextdeploy"),
    (f"{TOOL}/python {TOOL}/nextdeploy host activate 20261206-1 -c {ROOT}/nextdeploy.toml --as web1", "nextdeploy"),
    ("rsync --server -logDtprce.iLsfxCIvu --stats --link-dest /srv/x/releases/1 . /srv/x/releases/.ship-2", "rsync"),
    ("PM2 v7.0.4: God Daemon (/root/.pm2)", "pm2"),
    (f"/usr/bin/node {ROOT}/tools/node_modules/pm2/bin/pm2 jlist", "pm2"),
    (f"/usr/bin/node {ROOT}/tools/node_modules/pm2/lib/ProcessContainer.js", "app"),  # a worker being started
    ("next-server (v16.4.6)", "app"),
    (f"node {ROOT}/current/.nextdeploy/launcher.cjs", "app"),
    ("/usr/bin/node --version", "other"),
    ("sshd: /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config [listener] 0 of 64-128 startups", "sshd"),
    ("sshd: [accepted]", "sshd"),
    ("sleep infinity", "other"),
    ("python3 - /srv/bench-fleet/shared/server-actions.key", "other"),
])
def test_host_processes_are_grouped_by_kind(command: str, kind: str) -> None:
    assert host_kind(command) == kind


@pytest.mark.parametrize(("command", "kind"), [
    ("/work/.venv/bin/python -m nextdeploy deploy --json -c /tmp/x/nextdeploy.toml", "nextdeploy"),
    ("ssh -F /tmp/x/ssh_config -o BatchMode=yes -o ControlPath=/tmp/nd-ssh-ab/%C web1 true", "ssh"),
    ("ssh: /tmp/nd-ssh-ab/592af82a [mux]", "ssh"),
    ("rsync --archive --stats --checksum --link-dest=/srv/x/releases/1 -e ssh -F cfg . web1:/srv/x", "ssh"),
    ("/work/.tools/node_modules/.bin/pnpm run build", "build"),
    ("node /tmp/x/src/node_modules/.bin/../next/dist/bin/next build", "build"),
    ("sh -c next build", "build"),
])
def test_controller_processes_are_grouped_by_kind(command: str, kind: str) -> None:
    assert controller_kind(command) == kind


def test_an_ssh_master_is_found_by_the_control_dir_of_the_deploys_ssh_clients() -> None:
    commands = ["ssh -F cfg -o ControlMaster=auto -o ControlPath=/tmp/nd-ssh-q1/%C -o ControlPersist=60 web1 true",
                "pnpm run build"]
    assert control_dirs(commands) == {"/tmp/nd-ssh-q1"}


def proc(pid: int, ppid: int, rss_mb: int, command: str = "x", namespace: str = "mnt:[1]", cpu: float = 0.0) -> Proc:
    return Proc(pid, ppid, namespace, command, rss_mb * MB, cpu)


def test_descendants_follow_parent_pids_and_nothing_else() -> None:
    table = {pid: proc(pid, ppid, 1) for pid, ppid in [(10, 1), (11, 10), (12, 11), (13, 1), (14, 13)]}
    assert descendants(table, 10) == {10, 11, 12}
    assert descendants(table, 99) == set()


def test_peaks_are_the_highest_sum_at_one_sample_and_the_largest_single_process() -> None:
    peaks: dict[str, SubjectPeak] = {}
    # Sample 1: two build processes of 100 and 300 MB; sample 2: one of 350 MB and the deploy's 40 MB.
    add_sample(peaks, {1: proc(1, 0, 100, "pnpm"), 2: proc(2, 0, 300, "next build")},
               {1: ("controller", "build"), 2: ("controller", "build")})
    add_sample(peaks, {2: proc(2, 0, 350, "next build"), 3: proc(3, 0, 40, "deploy")},
               {2: ("controller", "build"), 3: ("controller", "nextdeploy"), 4: ("controller", "build")})
    controller = peaks["controller"].to_json()
    assert controller["peak_total_bytes"] == 400 * MB  # 100 + 300 beats 350 + 40
    assert controller["kinds"]["build"]["peak_sum_bytes"] == 400 * MB
    assert controller["kinds"]["build"]["peak_single_bytes"] == 350 * MB
    assert controller["kinds"]["build"]["peak_single_command"] == "next build"
    assert controller["kinds"]["build"]["most_processes"] == 2
    assert controller["kinds"]["nextdeploy"]["peak_sum_bytes"] == 40 * MB


def test_cpu_counts_from_the_first_sample_for_a_process_already_running_and_all_of_it_for_a_new_one() -> None:
    peaks: dict[str, SubjectPeak] = {}
    app = {1: ("web1", "app")}
    add_sample(peaks, {1: proc(1, 0, 100, cpu=50.0)}, app, running_before={1})
    add_sample(peaks, {1: proc(1, 0, 100, cpu=52.5), 2: proc(2, 0, 40, cpu=0.75)},
               {**app, 2: ("web1", "nextdeploy")}, running_before={1})
    add_sample(peaks, {2: proc(2, 0, 40, cpu=1.25)}, {2: ("web1", "nextdeploy")}, running_before={1})  # 1 gone
    web1 = peaks["web1"].to_json()
    assert web1["kinds"]["app"]["cpu_seconds"] == 2.5
    assert web1["kinds"]["nextdeploy"]["cpu_seconds"] == 1.25
    assert web1["cpu_seconds"] == 3.75


def test_the_sampler_sees_a_real_process_grow() -> None:
    """A child that holds 64 MB for a moment: the sampler, reading /proc, sees at least that much."""
    code = ("import time\nblock = bytearray(64 * 1024 * 1024)\nprint('ready', flush=True)\n"
            "end = time.process_time() + 0.5\nwhile time.process_time() < end:\n    pass\ntime.sleep(0.3)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        sampler = Sampler(lambda table: {pid: ("child", "python") for pid in descendants(table, child.pid)},
                          interval=0.05).start()
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        child.wait(10)
        peaks = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert sampler.samples >= 3
    assert peaks["child"].kinds["python"].peak_single >= 64 * 1024 * 1024
    assert peaks["child"].kinds["python"].cpu_seconds >= 0.4  # its busy half second, seen from its start
    assert child.pid not in process_table()


def deploy_json(hosts: list[str], seconds: float, build: float, sent: int = 110_000) -> dict[str, Any]:
    return {
        "release": "r2", "previous": "r1", "seconds": seconds, "build_seconds": build, "failed": None,
        "steps": [{"name": "fleet-setup", "seconds": 1.5}, {"name": "fleet-config", "seconds": 0.1},
                  {"name": "fleet-status", "seconds": 1.0}, {"name": "build", "seconds": build - 0.2},
                  {"name": "fleet-ship", "seconds": 1.0}, {"name": "fleet-prepare", "seconds": 1.3}],
        "hosts": [{"host": host, "outcome": "switched", "seconds": 5.0,
                   "ship": {"bytes_sent": sent, "release_bytes": 37_600_000, "files_transferred": 30, "seconds": 0.7}}
                  for host in hosts],
        "waves": [[host] for host in hosts],
    }


def memory(hosts: list[str], build_mb: int, host_nextdeploy_mb: int) -> dict[str, Any]:
    def subject(kinds: dict[str, int]) -> dict[str, Any]:
        return {"peak_total_bytes": sum(kinds.values()) * MB,
                "cpu_seconds": len(kinds) * 1.5,
                "kinds": {kind: {"peak_sum_bytes": mb * MB, "peak_single_bytes": mb * MB, "cpu_seconds": 1.5}
                          for kind, mb in kinds.items()}}

    return {"controller": subject({"build": build_mb, "nextdeploy": 40, "ssh": 30}),
            **{host: subject({"nextdeploy": host_nextdeploy_mb, "pm2": 60, "app": 230}) for host in hosts}}


def test_a_deploys_time_is_split_into_its_phases() -> None:
    result = deploy_json(["web1", "web2", "web3"], seconds=37.5, build=12.0)
    split = phases(result, wall=38.2)
    assert split["setup"] == 2.6
    assert split["build"] == 12.0 and split["next_build"] == 11.8
    assert split["ship"] == 1.0 and split["prepare"] == 1.3
    assert split["rollout"] == 15.0  # three waves of one host, 5 s each
    assert split["other"] == pytest.approx(37.5 - 2.6 - 12.0 - 1.0 - 1.3 - 15.0)
    assert split["outside"] == pytest.approx(0.7)


def test_a_waves_time_is_its_slowest_hosts() -> None:
    result = deploy_json(["web1", "web2", "web3"], seconds=30.0, build=10.0)
    result["waves"] = [["web1"], ["web2", "web3"]]
    result["hosts"][2]["seconds"] = 7.0
    assert phases(result, 30.0)["rollout"] == 12.0


def test_gaps_say_where_the_untimed_work_went() -> None:
    lines = [(0.1, "... [fleet-config] send the config to every host"),
             (0.2, "ok  [fleet-config] send the config to every host (0.1 s)"),
             (2.0, "... [fleet-status] read every host's status"),  # the lock and the mixed-fleet check: 1.8 s
             (3.0, "ok  [fleet-status] read every host's status (1.0 s)"),
             (3.02, "live: web1 r1"),
             (3.5, "... [export] export source"),
             (3.6, "ok  [export] export source (0.0 s)"),
             (3.62, "... [install] install dependencies"),  # under the minimum
             (4.0, "ok  [fleet-prepare] prepare (1.3 s)"),
             (4.9, "canary: activate r2 on web1")]
    assert gaps(lines) == {"after fleet-config": 1.8, "after fleet-status": 0.5, "after fleet-prepare": 0.9}


def figures(target: str, hosts: list[str], wall: float, build: float, failed: int = 0, sent: int = 110_000,
            host_nextdeploy_mb: int = 80) -> dict[str, Any]:
    result = deploy_json(hosts, seconds=wall - 0.7, build=build, sent=sent)
    found = deploy_figures(target, hosts, result, wall, 0, {"keepalive": {"requests": 4000, "failed": failed},
                                                            "new-connection": {"requests": 4000, "failed": 0}},
                           memory(hosts, 500, host_nextdeploy_mb))
    found["repeat"] = 1
    return found


def test_the_summary_judges_the_fleet_against_the_single_host_and_the_targets() -> None:
    fleet = figures("fleet", ["web1", "web2", "web3"], wall=36.0, build=12.0)
    single = figures("single", ["web1"], wall=26.0, build=12.0)
    found = summary([fleet, single])
    assert found["time_ratio"] == pytest.approx(36.0 / 26.0, abs=1e-3) and found["time_ratio_met"] is True
    assert found["beyond_build_ratio"] == pytest.approx(24.0 / 14.0, abs=1e-3)
    assert found["same_build_ratio"] == pytest.approx(36.0 / 26.0, abs=1e-3)
    assert found["ship_fraction_max"] == pytest.approx(110_000 / 37_600_000, abs=1e-5)
    assert found["ship_fraction_met"] is True
    assert found["failed"] == 0 and found["failed_met"] is True and found["requests"] == 16000
    assert found["host_to_build_memory_ratio"] == 0.16  # 80 MB of nextdeploy on a host / a 500 MB build
    text = markdown({"meta": meta(), "summary": found, "deploys": [fleet, single]})
    assert "= **1.385×** | ≤ 1.5× | met |" in text
    assert "| **0** of 16000 | 0 | met |" in text
    assert "| 1 | fleet | web3 | 5.0 | 80 / – / 60 / 230 / 370 | 1.5 / 1.5 / 1.5 / 4.5 |" in text
    assert "| 0 / 8000 | 570 / 500 / 40 / 30 | 4.5 (1.5) / 13.5 |" in text  # the fleet's 3 hosts: 3 x 4.5 s


def test_a_missed_target_says_so() -> None:
    fleet = figures("fleet", ["web1", "web2", "web3"], wall=45.0, build=12.0, failed=2, sent=5_000_000)
    single = figures("single", ["web1"], wall=26.0, build=12.0)
    slower_build = figures("single", ["web1"], wall=40.0, build=26.0)  # the same deploy, a slower build
    assert summary([fleet, slower_build])["same_build_ratio"] == pytest.approx((33 + 19) / (14 + 19), abs=1e-3)
    found = summary([fleet, single])
    assert found["time_ratio_met"] is False and found["ship_fraction_met"] is False and found["failed_met"] is False
    text = markdown({"meta": meta(), "summary": found, "deploys": [fleet, single]})
    assert text.count("**missed**") == 4  # time, the same with equal builds, bytes, failed requests


def meta() -> dict[str, Any]:
    return {"started": "2026-12-06 10:00 UTC", "duration_s": 300.0, "loadavg_end": (1.0, 1.0, 1.0),
            "command": "bench/fleet.py", "about": "a run.",
            "machine": {"cpus": 2, "cpu": "x", "node": "v20", "pm2": "7", "next": "16", "git": "abc",
                        "loadavg_start": (0.5, 0.5, 0.5)}}
