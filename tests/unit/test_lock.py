"""The deploy lock: exclusive, names its holder, taken over when the holder died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nextdeploy.core.errors import LockError
from nextdeploy.host.lock import DeployLock

HOLD = """
import sys, time
from pathlib import Path
from nextdeploy.host.lock import DeployLock
lock = DeployLock(Path(sys.argv[1]), "holder")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_in_subprocess(path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_second_holder_fails_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = hold_in_subprocess(path)
    try:
        started = time.monotonic()
        with pytest.raises(LockError) as caught:
            DeployLock(path, "second", timeout=0.6).acquire()
        assert time.monotonic() - started >= 0.5  # it waited
        assert f"pid {holder.pid}" in caught.value.message and "`holder`" in caught.value.message
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = hold_in_subprocess(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with DeployLock(path, "next") as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == holder.pid
    # Released cleanly: nothing to take over next time.
    with DeployLock(path, "again") as lock:
        assert lock.taken_over is None


def test_waiter_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = hold_in_subprocess(path)
    try:
        subprocess.Popen(["sh", "-c", f"sleep 0.5; kill {holder.pid}"])
        with DeployLock(path, "waiter", timeout=10) as lock:
            assert lock.taken_over is not None  # the holder was killed, not released
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_taken_beforehand_is_not_taken_again_by_with(tmp_path: Path) -> None:
    # flock locks belong to an open file: a second acquire by the same holder would wait for itself.
    lock = DeployLock(tmp_path / ".lock", "nextdeploy deploy")
    lock.acquire()
    with lock:
        assert lock.holder() is not None
    assert lock.holder() is None  # released by the with
    with DeployLock(tmp_path / ".lock", "nextdeploy rollback", timeout=0):
        pass


def test_the_running_holder_is_named_and_a_dead_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    assert DeployLock(path, "status").running_holder() is None  # no lock file yet
    holder = hold_in_subprocess(path)
    try:
        running = DeployLock(path, "status").running_holder()
        assert running is not None and running.pid == holder.pid and running.command == "holder"
    finally:
        holder.kill()
        holder.wait()
    # Killed: its details are still in the file (for the take-over), but nobody runs.
    assert DeployLock(path, "status").holder() is not None
    assert DeployLock(path, "status").running_holder() is None
