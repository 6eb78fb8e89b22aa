"""The fake PM2 (``nextdeploy.pm2.fake``) does what the held cut-over's unit tests rely on, as PM2 7 and the
launcher do it (docs/design.md, "PM2 facts it relies on"; tests/integration/test_activation.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.host.probe import http_get
from nextdeploy.plans.ops import DeleteWorkers, SpawnWorkers, Symlink, WriteFile
from nextdeploy.pm2.fake import Behaviour, FakeHost, Killed


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    config = parse_config({"app": {"name": "hello", "source": "app"},
                           "server": {"root": str(tmp_path / "root"), "port": 3000}}, tmp_path)
    fake = FakeHost(config)
    fake.serve("r1")
    with fake.installed():
        yield fake


def test_the_clock_moves_only_when_slept_in_this_thread_only_and_is_put_back(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "hello", "source": "app"}, "server": {"root": str(tmp_path)}}, tmp_path)
    fake = FakeHost(config)
    with fake.installed():
        before = time.monotonic()
        time.sleep(30)
        assert time.monotonic() - before == 30
        fake.clock.raise_at(before + 31, Killed())
        with pytest.raises(Killed):
            time.sleep(1)
        other: list[float] = []
        thread = threading.Thread(target=lambda: other.append(time.monotonic()))  # another thread: real time
        thread.start()
        thread.join()
        assert other and other[0] != fake.clock.now
    now = time.monotonic()
    time.sleep(0.01)
    assert time.monotonic() > now != fake.clock.now  # put back


def test_a_duplicate_keeps_its_models_env_and_restart_count_and_runs_current(host: FakeHost) -> None:
    model = host.daemon.processes[0]
    model.restarts = 4
    host.make_release("r2", Behaviour(boot=1.0))
    host.executor.apply(Symlink("releases/r2", host.paths.current_link))
    host.executor.apply(SpawnWorkers(host.pm2.home_dir / "rpc.sock", (0,)))
    new = host.daemon.processes[-1]
    assert (new.pm_id, new.env, new.restarts, new.release, new.status) == (2, model.env, 4, "r2", "launching")
    held = ReleaseLayout(host.paths.release_dir("r2")).held_dir / str(new.pid)
    time.sleep(0.9)
    assert not held.exists()
    time.sleep(0.2)  # it answers: held off the public port, its private port in held/<pid>
    port = int(held.read_text())
    assert http_get("127.0.0.1", port, "/", 1).release == "r2"
    assert {http_get("127.0.0.1", 3000, "/", 1).release for _ in range(6)} == {"r1"}
    host.executor.apply(WriteFile(ReleaseLayout(host.paths.release_dir("r2")).approved_file, "approved\n"))
    time.sleep(0.02)  # approved: it opens the public port, beside the old workers
    assert not held.exists()
    assert sorted(http_get("127.0.0.1", 3000, "/", 1).release or "" for _ in range(3)) == ["r1", "r1", "r2"]


def test_a_worker_that_exits_is_restarted_from_current_with_a_new_pid(host: FakeHost) -> None:
    host.make_release("r2")
    host.executor.apply(Symlink("releases/r2", host.paths.current_link))
    worker = host.pm2.workers("hello")[0]
    host.daemon.kill(worker.pid)
    again = host.pm2.workers("hello")[0]
    assert (again.pm_id, again.restarts) == (worker.pm_id, worker.restarts + 1) and again.pid != worker.pid
    assert again.release_in(host.paths.releases_dir) == "r2"


def test_a_deleted_worker_drains_then_leaves_the_list(host: FakeHost) -> None:
    started = time.monotonic()
    host.executor.apply(DeleteWorkers(host.pm2.home_dir / "rpc.sock", (0,), wait=False))
    assert [w.pm_id for w in host.pm2.leaving_workers("hello")] == [0]
    assert [w.pm_id for w in host.pm2.workers("hello")] == [1]
    assert {http_get("127.0.0.1", 3000, "/", 1).release for _ in range(4)} == {"r1"}  # from worker 1 only
    host.executor.apply(DeleteWorkers(host.pm2.home_dir / "rpc.sock", (1,), wait=True))
    assert host.pm2.workers("hello") == [] and time.monotonic() > started
    assert http_get("127.0.0.1", 3000, "/", 1).error is not None  # nothing listens


def test_scripted_behaviours(host: FakeHost) -> None:
    host.make_release("r2", Behaviour(boot=0.5, hangs_after=2.0, dies_after=4.0, dies_once=True, exit_code=7))
    host.executor.apply(Symlink("releases/r2", host.paths.current_link))
    host.executor.apply(SpawnWorkers(host.pm2.home_dir / "rpc.sock", (0,)))
    time.sleep(0.6)
    new = host.daemon.processes[-1]
    assert new.port is not None and http_get("127.0.0.1", new.port, "/", 1).status == 200
    time.sleep(1.5)
    before = time.monotonic()
    assert http_get("127.0.0.1", new.port, "/", 1).error == "no answer within 1 s"
    assert time.monotonic() - before == pytest.approx(1.0)  # a hung request takes its whole timeout
    time.sleep(1.0)
    assert (new.restarts, new.exit_code) == (1, 7)  # PM2 restarted it; its next run lives on
    time.sleep(10)
    assert new.restarts == 1 and new.status == "online"
