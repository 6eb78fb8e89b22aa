"""Reading /proc: one parser of /proc/<pid>/stat for a process's state, parent and age."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nextdeploy.host.procs import parent_pid, pid_exists, process_age, process_executable, running, stat_fields


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
