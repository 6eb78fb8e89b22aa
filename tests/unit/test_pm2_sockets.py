"""The executor's worker ops on the PM2 daemon's socket (``pm2.sockets``): reloads, duplicates and deletes
of workers by id, several at once, and the wait on PM2's bus for a new worker's 'ready'. A fake daemon
answers on a unix socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.host.executor import DryRunExecutor, LocalExecutor
from nextdeploy.plans.ops import DeleteWorkers, ReloadWorkers, SpawnWorkers
from nextdeploy.pm2 import rpc as pm2rpc
from nextdeploy.pm2.sockets import readied_worker


def _fake_pm2_daemon(path: Path, answer: Callable[[dict[str, Any]], dict[str, Any]],
                     delay: Callable[[dict[str, Any]], float] = lambda request: 0.3) -> list[float]:
    """A unix socket that answers each call (one per connection, all at once) after ``delay`` (0.3 s);
    returns the list of (start, end) times it fills in, to see whether calls overlapped."""

    spans: list[float] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)

    def handle(connection: socket.socket) -> None:
        with connection:
            request = b""
            while pm2rpc.decode_frame(request) is None:
                request += connection.recv(4096)
            parts, _ = pm2rpc.decode_frame(request)  # type: ignore[misc]
            started = time.monotonic()
            time.sleep(delay(pm2rpc.unpack(parts[0])))
            body = answer(pm2rpc.unpack(parts[0]))
            connection.sendall(pm2rpc.encode_frame([pm2rpc.pack(body), parts[1]]))
            spans.extend((started, time.monotonic()))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return spans


def test_reload_workers_calls_the_daemon_for_each_id_at_once(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        calls.append(request)
        return {"args": [{"pm_id": request["args"][0]["id"]}]}

    spans = _fake_pm2_daemon(tmp_path / "rpc.sock", answer)
    result = LocalExecutor().apply(ReloadWorkers(tmp_path / "rpc.sock", (0, 1), at_once=2, timeout=5))
    assert result.ok, result.stderr
    assert sorted(c["args"][0]["id"] for c in calls) == [0, 1]
    assert all(c["method"] == "reloadProcessId" and c["args"][0]["env"] == {} for c in calls)
    first_end, second_start = min(spans[1::2]), max(spans[0::2])
    assert second_start < first_end  # both reloads were in flight together


def test_reload_workers_reports_each_failed_worker(tmp_path: Path) -> None:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["args"][0]["id"] == 1:
            return {"error": "Reload already in progress for process id 1, retry later"}
        return {"args": [{}]}

    _fake_pm2_daemon(tmp_path / "rpc.sock", answer)
    result = LocalExecutor().apply(ReloadWorkers(tmp_path / "rpc.sock", (0, 1), timeout=5))
    assert not result.ok and result.stderr.startswith("worker 1:") and "in progress" in result.stderr
    missing = LocalExecutor().apply(ReloadWorkers(tmp_path / "nothing.sock", (0,), timeout=5))
    assert not missing.ok and "worker 0" in missing.stderr


def _reloading_daemon(path: Path, opened: list[socket.socket], fail: tuple[int, ...] = ()) -> dict[str, float]:
    """A daemon whose reloads publish the new worker's 'ready' on its bus (pub.sock) after 0.5 s and
    answer after 1.5 s (the old worker drained), or answer an error at once for the ids in ``fail``;
    returns when each reload answered. Its bus sockets go to ``opened``, for the test to close."""
    subscribers: list[socket.socket] = []
    answered: dict[str, float] = {}
    bus = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    opened.append(bus)
    bus.bind(str(path.with_name("pub.sock")))
    bus.listen(4)

    def subscribe() -> None:
        subscriber, _ = bus.accept()
        subscribers.append(subscriber)
        opened.append(subscriber)

    threading.Thread(target=subscribe, daemon=True).start()

    def publish_ready(pm_id: int) -> None:
        time.sleep(0.5)
        event = {"raw": "ready", "process": {"pm_id": pm_id, "name": "hello"}}
        for subscriber in subscribers:
            try:
                subscriber.sendall(pm2rpc.encode_frame([pm2rpc.pack("log:out"), pm2rpc.pack({"data": "x"})]))
                subscriber.sendall(pm2rpc.encode_frame([pm2rpc.pack("process:msg"), pm2rpc.pack(event)]))
            except OSError:
                pass  # the subscriber left (PM2 skips sockets no longer writable)

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        pm_id = request["args"][0]["id"]
        answered[str(pm_id)] = time.monotonic()
        return {"error": "PM2 ID unknown"} if pm_id in fail else {"args": [{}]}

    def delay(request: dict[str, Any]) -> float:
        pm_id = request["args"][0]["id"]
        if pm_id in fail:
            return 0.0
        threading.Thread(target=publish_ready, args=(pm_id,), daemon=True).start()
        return 1.5

    _fake_pm2_daemon(path, answer, delay)
    return answered


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_reload_until_serving_returns_when_the_old_workers_stop_and_settle_waits_for_their_exit(
        tmp_path: Path, opened: list[socket.socket]) -> None:
    answered = _reloading_daemon(tmp_path / "rpc.sock", opened)
    executor = LocalExecutor()
    began = time.monotonic()
    result = executor.apply(ReloadWorkers(tmp_path / "rpc.sock", (0, 1), timeout=5, until_serving=True))
    returned = time.monotonic()
    assert result.ok, result.stderr
    assert 0.5 <= returned - began < 1.3 and not answered  # past 'ready', before PM2's answers
    assert executor.settle() == [] and sorted(answered) == ["0", "1"]
    assert executor.settle() == []  # nothing left
    # Without until_serving the op waits for PM2's answers.
    answered.clear()
    assert LocalExecutor().apply(ReloadWorkers(tmp_path / "rpc.sock", (0, 1), timeout=5)).ok
    assert sorted(answered) == ["0", "1"]


def test_reload_until_serving_waits_for_every_call_when_one_fails(tmp_path: Path,
                                                                  opened: list[socket.socket]) -> None:
    answered = _reloading_daemon(tmp_path / "rpc.sock", opened, fail=(1,))
    executor = LocalExecutor()
    result = executor.apply(ReloadWorkers(tmp_path / "rpc.sock", (0, 1), timeout=5, until_serving=True))
    assert not result.ok and result.stderr.startswith("worker 1:") and "unknown" in result.stderr
    assert sorted(answered) == ["0", "1"] and executor.settle() == []  # nothing left running behind


def test_the_ready_of_a_worker_is_read_from_pm2s_bus() -> None:
    ready = {"raw": "ready", "process": {"pm_id": 3, "name": "hello"}}
    assert readied_worker("process:msg", ready) == 3
    assert readied_worker("log:out", ready) is None
    assert readied_worker("process:msg", {**ready, "raw": "shutdown"}) is None
    assert readied_worker("process:msg", {"raw": "ready", "process": {"pm_id": "_old_3"}}) is None
    assert readied_worker("process:msg", {"raw": "ready"}) is None
    assert readied_worker("process:msg", None) is None


def test_reload_workers_renders_as_a_comment_in_a_dry_run() -> None:
    lines: list[str] = []
    DryRunExecutor(lines.append).apply(ReloadWorkers(Path("/p/rpc.sock"), (0, 1)))
    assert lines == ["# pm2 daemon /p/rpc.sock: reloadProcessId({id: 0}) reloadProcessId({id: 1}), 2 at a time"]


def test_spawn_and_delete_workers_go_to_the_daemon_by_id(tmp_path: Path) -> None:
    # The daemon answers a duplicate only once its worker said 'ready' (a held one: after the approval), and a
    # delete once the worker stopped: SpawnWorkers and DeleteWorkers(wait=False) return at once regardless.
    calls: list[tuple[str, Any]] = []

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        calls.append((request["method"], request["args"][0]))
        return {"error": "id unknown"} if request["args"][0] == 9 else {"args": [{}]}

    # Margins wide enough for a machine under load: what is checked is "returned before the daemon answered"
    # (well under 3 s) and "waited for both answers, given at once" (3 s, not 6).
    _fake_pm2_daemon(tmp_path / "rpc.sock", answer, delay=lambda request: 3.0)
    executor = LocalExecutor()
    started = time.monotonic()
    assert executor.apply(SpawnWorkers(tmp_path / "rpc.sock", (0, 1))).ok
    assert executor.apply(DeleteWorkers(tmp_path / "rpc.sock", (0, 1), wait=False)).ok
    returned = time.monotonic() - started
    assert returned < 2.0
    result = executor.apply(DeleteWorkers(tmp_path / "rpc.sock", (2, 9), timeout=8))  # waits, both at once
    assert 3.0 <= time.monotonic() - started - returned < 5.5
    assert not result.ok and result.stderr.startswith("worker 9:") and "id unknown" in result.stderr
    assert sorted(calls) == [("deleteProcessId", 0), ("deleteProcessId", 1), ("deleteProcessId", 2),
                             ("deleteProcessId", 9), ("duplicateProcessId", 0), ("duplicateProcessId", 1)]
    # No daemon: said at once, per call.
    missing = executor.apply(SpawnWorkers(tmp_path / "none.sock", (0,)))
    assert not missing.ok and missing.stderr.startswith("duplicateProcessId(0): ")
    lines: list[str] = []
    DryRunExecutor(lines.append).apply(DeleteWorkers(Path("/p/rpc.sock"), (0, 1), wait=False))
    DryRunExecutor(lines.append).apply(SpawnWorkers(Path("/p/rpc.sock"), (0, 1)))
    assert lines == ["# pm2 daemon /p/rpc.sock: deleteProcessId(0) deleteProcessId(1), not waiting",
                     "# pm2 daemon /p/rpc.sock: duplicateProcessId(0) duplicateProcessId(1)"]
