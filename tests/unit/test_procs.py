"""Processes: one parser of /proc/<pid>/stat for a process's state, parent and age; finding processes by
their env marker; stopping them (interrupt, then kill)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nextdeploy.host.executor import LocalExecutor
from nextdeploy.host.procs import (
    parent_pid,
    pid_exists,
    process_age,
    process_executable,
    processes_marked,
    running,
    stat_fields,
)
from nextdeploy.plans.ops import StopProcesses


def test_stat_fields_survive_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "a) b (c"  # the name /proc shows as "(a) b (c)", between the pid and the state
    shutil.copy(sleep, odd)
    child = subprocess.Popen([str(odd), "5"])
    try:
        time.sleep(0.3)
        assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "a) b (c"
        fields = stat_fields(child.pid)
        assert fields[0] == "S" and running(child.pid)
        assert parent_pid(child.pid) == os.getpid()
        age = process_age(child.pid)
        assert age is not None and 0.2 <= age < 3.0, age
    finally:
        child.kill()
        child.wait()
    assert stat_fields(child.pid) == [] and parent_pid(child.pid) is None and not running(child.pid)


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while stat_fields(child.pid)[:1] != ["Z"] and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert stat_fields(child.pid)[:1] == ["Z"] and not running(child.pid)
    finally:
        child.wait()


def test_a_process_is_there_and_runs_its_binary() -> None:
    assert pid_exists(os.getpid()) and not pid_exists(0) and not pid_exists(2**22 + 12345)
    assert process_executable(os.getpid()) == os.path.realpath(sys.executable)
    assert process_executable(2**22 + 12345) is None


def test_stop_processes_interrupts_then_kills_what_stays(tmp_path: Path) -> None:
    # One exits on SIGINT (as a draining launcher does), one ignores it: SIGKILL after the grace.
    def child(on_sigint: str) -> subprocess.Popen[str]:
        code = f"import signal, time\nsignal.signal(signal.SIGINT, signal.{on_sigint})\nprint('ready', flush=True)\n" \
               "time.sleep(60)"
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    polite, stubborn = child("SIG_DFL"), child("SIG_IGN")
    try:
        assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in (polite, stubborn))
        started = time.monotonic()
        LocalExecutor().apply(StopProcesses((polite.pid, stubborn.pid), grace=1.0))
        assert polite.wait(timeout=5) == -signal.SIGINT
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert 1.0 <= time.monotonic() - started < 3
    finally:
        for process in (polite, stubborn):
            process.kill()
            process.wait()
    assert StopProcesses((1, 2), 10).render() == "kill -INT 1 2; sleep 10; kill -KILL 1 2  # what is left of them"


def test_processes_marked_finds_a_process_and_its_children_by_their_env(tmp_path: Path) -> None:
    marker = {"NEXTDEPLOY_PREFLIGHT_FOR": str(tmp_path / "a root")}
    marked = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], env={**os.environ, **marker}, cwd="/",
                              start_new_session=True)
    other = subprocess.Popen(["sleep", "30"], env={**os.environ, "NEXTDEPLOY_PREFLIGHT_FOR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 5
        found: list[int] = []
        while len(found) < 2 and time.monotonic() < deadline:
            found = processes_marked("NEXTDEPLOY_PREFLIGHT_FOR", str(tmp_path / "a root"))
            time.sleep(0.02)
        assert marked.pid in found and len(found) == 2  # the shell and its sleep, wherever they work
        assert other.pid not in found
    finally:
        os.killpg(marked.pid, signal.SIGKILL)
        other.kill()
        marked.wait()
        other.wait()


def test_leftovers_of_a_root_are_not_a_containers_own_root_at_the_same_path(tmp_path: Path) -> None:
    """Processes that look like this root's leftovers (the preflight marker naming its path, a cwd in its
    builds/): one here, one in a mount namespace that shares the root (systemd's PrivateTmp gives a service
    one), and one in a container of its own on the same PID namespace, where the same path is its own deploy
    root. Only the first two are this root's."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (mount namespaces)")
    from nextdeploy.activation.preflight import PREFLIGHT_MARKER
    from nextdeploy.activation.recovery import leftover_processes
    from nextdeploy.core.paths import DeployPaths

    root, theirs, elsewhere = tmp_path / "srv" / "app", tmp_path / "their-app", tmp_path / "elsewhere"
    for directory in (root / "builds" / "r1", theirs / "builds" / "r1", elsewhere):
        directory.mkdir(parents=True)
    marked = {**os.environ, PREFLIGHT_MARKER: str(root)}
    in_ns = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]
    started = [
        subprocess.Popen(["sh", "-c", "echo ready; exec sleep 60"], env=marked, cwd="/", stdout=subprocess.PIPE),
        subprocess.Popen([*in_ns, f"mount -t tmpfs none {elsewhere} && cd {root}/builds/r1 && echo ready && "
                                  "exec sleep 60"], stdout=subprocess.PIPE),
        subprocess.Popen([*in_ns, f"mount --bind {theirs} {root} && cd {root}/builds/r1 && echo ready && "
                                  "exec sleep 60"], env=marked, stdout=subprocess.PIPE),
    ]
    try:
        for process in started:
            assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        here, sharing, container = (process.pid for process in started)
        assert os.readlink(f"/proc/{container}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert leftover_processes(DeployPaths(root)) == sorted([here, sharing])
        assert leftover_processes(DeployPaths(theirs)) == []  # the container's: not reachable at its path
    finally:
        for process in started:
            process.kill()
            process.wait()
