from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.core.errors import HostPathError, Pm2Error
from nextdeploy.host.executor import LocalExecutor, RunResult
from nextdeploy.host.procs import process_age
from nextdeploy.pm2.client import Pm2, Worker, _telling_line, parse_jlist, worker_of


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


def test_workers_on_their_way_out_are_not_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from nextdeploy.host.executor import LocalExecutor
    from nextdeploy.pm2.client import Pm2

    listed = [{"name": "hello", "pm_id": 0, "pid": 0, "pm2_env": {"status": "online"}},
              {"name": "hello", "pm_id": "_old_0", "pid": 0, "pm2_env": {"status": "stopping"}},  # reload
              {"name": "hello", "pm_id": 3, "pid": 0, "pm2_env": {"status": "stopping", "exit_code": 0}},  # delete
              {"name": "hello", "pm_id": 4, "pid": 0, "pm2_env": {"status": "launching", "exit_code": 1}},
              {"name": "other", "pm_id": 1, "pid": 0, "pm2_env": {"status": "online"}}]
    pm2 = Pm2("pm2", None, LocalExecutor())
    monkeypatch.setattr(pm2, "processes", lambda: listed)
    assert [worker.pm_id for worker in pm2.workers("hello")] == [0, 4]
    assert [worker.exit_code for worker in pm2.workers("hello")] == [None, 1]
    assert [worker.pm_id for worker in pm2.leaving_workers("hello")] == [3]


def test_dump_is_what_pm2_save_writes_without_outgoing_workers() -> None:
    from nextdeploy.plans.pm2 import dump_content

    listed = [
        {"name": "hello", "pm_id": 0, "pm2_env": {"name": "hello", "pm_id": 0, "instances": 2,
                                                   "prev_restart_delay": 0, "env": {"PORT": "3000", "K": "é"}}},
        {"name": "hello", "pm_id": "_old_1", "pm2_env": {"name": "hello", "pm_id": "_old_1"}},
        {"name": "pm2-logrotate", "pm_id": 2, "pm2_env": {"name": "pm2-logrotate", "pmx_module": True}},
    ]
    assert json.loads(dump_content(listed)) == [{"name": "hello", "env": {"PORT": "3000", "K": "é"}}]
    assert listed[0]["pm2_env"]["pm_id"] == 0  # the daemon's list is not changed
    assert dump_content([]) == "[]"
    # The old workers of a held cut-over, being deleted, are left out too.
    assert json.loads(dump_content(listed, leaving={0})) == []


def _pm2_with_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listed: list[Any] | None) -> Any:
    """A Pm2 whose daemon socket lists ``listed`` (None: no daemon); its CLI calls are recorded."""
    from nextdeploy.host.executor import LocalExecutor, RunResult
    from nextdeploy.pm2 import rpc as pm2rpc
    from nextdeploy.pm2.client import Pm2

    def process_list(home: Path) -> list[Any]:
        if listed is None:
            raise pm2rpc.RpcUnavailable("no daemon")
        return listed
    monkeypatch.setattr(pm2rpc, "process_list", process_list)
    pm2 = Pm2("pm2", tmp_path, LocalExecutor())
    pm2.cli_calls = []  # type: ignore[attr-defined]

    def run(argv: tuple[str, ...], timeout: float | None = 300) -> RunResult:
        pm2.cli_calls.append(argv)  # type: ignore[attr-defined]
        return RunResult(0)
    monkeypatch.setattr(pm2, "run", run)
    return pm2


def test_save_writes_the_dump_from_the_socket_and_keeps_the_old_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import stat

    listed = [{"name": "hello", "pm_id": 0, "pm2_env": {"name": "hello", "pm_id": 0}}]
    pm2 = _pm2_with_daemon(monkeypatch, tmp_path, listed)
    (tmp_path / "dump.pm2").write_text('[{"name": "before"}]')
    pm2.save()
    assert pm2.cli_calls == []
    assert json.loads((tmp_path / "dump.pm2").read_text()) == [{"name": "hello"}]
    assert json.loads((tmp_path / "dump.pm2.bak").read_text()) == [{"name": "before"}]
    assert {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("dump.pm2", "dump.pm2.bak")} == {0o600}


def test_save_falls_back_to_pm2_save(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pm2 = _pm2_with_daemon(monkeypatch, tmp_path, None)  # no daemon
    pm2.save()
    assert pm2.cli_calls == [("pm2", "save", "--force")]
    assert not (tmp_path / "dump.pm2").exists()

    elsewhere = tmp_path / "kept-elsewhere.json"
    elsewhere.write_text("[]")
    (tmp_path / "dump.pm2").symlink_to(elsewhere)  # a dump someone keeps elsewhere: PM2 writes through it
    pm2 = _pm2_with_daemon(monkeypatch, tmp_path, [])
    pm2.save(required=False)
    assert pm2.cli_calls == [("pm2", "save", "--force")]
    assert (tmp_path / "dump.pm2").is_symlink() and elsewhere.read_text() == "[]"


def test_a_failed_pm2_command_is_told_by_its_error_line() -> None:
    crash = ("Error: ENOTDIR: not a directory, mkdir '/srv/pm2file/logs'\n\n  ___ banner ___\n"
             "Error: ENOTDIR: not a directory, open '/srv/pm2file/pm2.log'\n"
             "    at Object.openSync (node:fs:573:18)\n{\n  errno: -20,\n}\n\nNode.js v20.20.2\n")
    assert _telling_line(RunResult(1, "", crash)) == "Error: ENOTDIR: not a directory, open '/srv/pm2file/pm2.log'"
    assert _telling_line(RunResult(1, "[PM2][ERROR] Process or Namespace hello not found\n", "")) == (
        "[PM2][ERROR] Process or Namespace hello not found")
    stack_only = "something odd\n    at x (y.js:1:1)\n\nNode.js v20.20.2\n"
    assert _telling_line(RunResult(1, "", stack_only)) == "something odd"
    assert _telling_line(RunResult(3, "", "")) == "exit code 3"


def test_pm2_home_must_be_a_writable_directory(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / ".pm2"
    Pm2("pm2", nested, LocalExecutor()).ensure_home()
    assert nested.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(HostPathError, match="is not a directory"):
        Pm2("pm2", tmp_path / "file", LocalExecutor()).ensure_home()
    with pytest.raises(HostPathError, match="cannot create PM2_HOME"):
        Pm2("pm2", tmp_path / "file" / "below", LocalExecutor()).ensure_home()
