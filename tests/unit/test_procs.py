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


def test_processes_marked_leaves_out_a_process_of_another_mount_namespace(tmp_path: Path) -> None:
    """The same root path in another mount namespace (a container; a fleet's test hosts, which share one PID
    namespace) is another dir: its preflight server is not ours to stop."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare --mount (root)")
    marker = {"NEXTDEPLOY_PREFLIGHT_FOR": str(tmp_path / "a root")}
    elsewhere = subprocess.Popen([unshare, "--mount", "sleep", "30"], env={**os.environ, **marker})
    here = subprocess.Popen(["sleep", "30"], env={**os.environ, **marker})
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.readlink(f"/proc/{elsewhere.pid}/ns/mnt") == \
                os.readlink("/proc/self/ns/mnt"):  # unshare execs sleep once the namespace is made
            time.sleep(0.02)
        assert processes_marked("NEXTDEPLOY_PREFLIGHT_FOR", str(tmp_path / "a root")) == [here.pid]
    finally:
        for process in (elsewhere, here):
            process.kill()
            process.wait()
