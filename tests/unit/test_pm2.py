from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from nextdeploy.errors import Pm2Error
from nextdeploy.pm2 import Worker, parse_jlist, process_age, worker_of


def test_jlist_skips_daemon_lines() -> None:
    payload = [{"name": "hello", "pid": 42, "pm_id": 0, "monit": {"memory": 1000},
                "pm2_env": {"status": "online", "restart_time": 3}}]
    output = "[PM2] Spawning PM2 daemon with pm2_home=/x\n[PM2] PM2 Successfully daemonized\n" + json.dumps(payload)
    entries = parse_jlist(output)
    worker = worker_of(entries[0])
    assert (worker.pid, worker.status, worker.restarts, worker.memory) == (42, "online", 3, 1000)


def test_jlist_garbage() -> None:
    with pytest.raises(Pm2Error):
        parse_jlist("[PM2] something went wrong\n")


def test_release_of_a_worker(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    (releases / "r1" / "apps" / "web").mkdir(parents=True)
    worker = Worker(0, 1, "online", 0, 0, str(releases / "r1" / "apps" / "web"))
    assert worker.release_in(releases) == "r1"
    assert Worker(0, 1, "online", 0, 0, "/elsewhere").release_in(releases) is None


def test_process_age_from_proc() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        time.sleep(0.3)
        age = process_age(child.pid)
        assert age is not None and 0.2 <= age < 3.0, age
    finally:
        child.kill()
        child.wait()
    own = process_age(os.getpid())
    assert own is not None and own > age
    assert process_age(0) is None and process_age(2**22 + 12345) is None


def test_the_outgoing_worker_of_a_reload_in_progress_is_not_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from nextdeploy.executor import LocalExecutor
    from nextdeploy.pm2 import Pm2

    listed = [{"name": "hello", "pm_id": 0, "pid": 0, "pm2_env": {"status": "online"}},
              {"name": "hello", "pm_id": "_old_0", "pid": 0, "pm2_env": {"status": "stopping"}},
              {"name": "other", "pm_id": 1, "pid": 0, "pm2_env": {"status": "online"}}]
    pm2 = Pm2("pm2", None, LocalExecutor())
    monkeypatch.setattr(pm2, "processes", lambda: listed)
    assert [worker.pm_id for worker in pm2.workers("hello")] == [0]
