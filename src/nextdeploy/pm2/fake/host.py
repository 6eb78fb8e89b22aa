"""The fake PM2's client, executor and host: ``Pm2`` and ``LocalExecutor`` over the fake daemon, its workers
behind ``http.client``, and the fake clock as ``time``."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nextdeploy.core.config import Config
from nextdeploy.core.paths import META_DIR, DeployPaths, ReleaseLayout
from nextdeploy.host.executor import LocalExecutor, RunResult
from nextdeploy.host.probe import RELEASE_HEADER
from nextdeploy.plans.ops import DeleteWorkers, Op, ReloadWorkers, Run, SpawnWorkers, StopProcesses
from nextdeploy.pm2.client import Pm2, Worker
from nextdeploy.pm2.fake.daemon import Behaviour, FakeClock, FakeDaemon


class FakePm2(Pm2):
    """``Pm2`` over the fake daemon's list."""

    def __init__(self, daemon: FakeDaemon, home: Path, executor: FakeExecutor) -> None:
        super().__init__("pm2", home, executor)
        self.daemon = daemon

    def processes(self) -> list[dict[str, Any]]:
        return [self.daemon.entry(p) for p in self.daemon.processes]

    def workers(self, name: str) -> list[Worker]:
        return [self.daemon.worker(p) for p in self.daemon.processes if p.name == name and p.status != "stopping"]

    def leaving_workers(self, name: str) -> list[Worker]:
        return [self.daemon.worker(p) for p in self.daemon.processes if p.name == name and p.status == "stopping"]

    def save(self, required: bool = True, leaving: frozenset[int] = frozenset()) -> None:
        self.daemon.saves += 1

    def lost_workers(self, releases_dir: Path) -> list[int]:
        return []

    def daemon_pid(self) -> int | None:
        return None


class FakeExecutor(LocalExecutor):
    """Files as ``LocalExecutor``; PM2 ops and pm2 commands on the fake daemon. ``applied``: every op."""

    def __init__(self, daemon: FakeDaemon) -> None:
        super().__init__()
        self.daemon = daemon
        self.applied: list[Op] = []

    def apply(self, op: Op) -> RunResult:
        self.daemon.clock.check()
        self.applied.append(op)
        daemon = self.daemon
        if isinstance(op, SpawnWorkers):
            for pm_id in op.like:
                daemon.duplicate(pm_id)
        elif isinstance(op, DeleteWorkers):
            for pm_id in op.ids:
                daemon.delete(pm_id)
            if op.wait:  # each reply comes once its worker stopped
                daemon.wait_until(lambda: all(daemon.find(i) is None for i in op.ids), op.timeout or 30)
        elif isinstance(op, ReloadWorkers):
            for pm_id in op.ids:
                daemon.reload(pm_id)
            reloaded = [p for p in daemon.processes if p.pm_id in op.ids]
            if not daemon.wait_until(lambda: all(p.serving for p in reloaded), op.timeout):
                return RunResult(1, stderr="the reloaded workers did not serve")
        elif isinstance(op, StopProcesses):
            for pid in op.pids:
                daemon.kill(pid)
        elif isinstance(op, Run):
            if op.argv[:1] != ("pm2",):
                raise AssertionError(f"a unit test ran a command: {op.render()}")
            return daemon.cli(op.argv[1:])
        else:
            return super().apply(op)
        return RunResult(0)


class _Response:
    def __init__(self, status: int, release: str | None) -> None:
        self.status = status
        self._body = b"ok"
        self._headers = [("content-type", "text/plain")] + ([(RELEASE_HEADER, release)] if release else [])

    def read(self, amount: int = -1) -> bytes:
        return self._body

    def getheaders(self) -> list[tuple[str, str]]:
        return self._headers


class FakeHost:
    """A deploy root with a fake PM2 and fake workers (see the module's doc). ``install`` them for a test."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.paths = DeployPaths(config.root)
        self.clock = FakeClock()
        self.daemon = FakeDaemon(self.clock, self.paths, config)
        self.executor = FakeExecutor(self.daemon)
        self.pm2 = FakePm2(self.daemon, self.paths.root / "pm2", self.executor)

    def make_release(self, release_id: str, behaviour: Behaviour | None = None, approved: bool = False) -> Path:
        """A complete release that holds until approved (no app in it: the fake workers run none)."""
        release_dir = self.paths.release_dir(release_id)
        meta = release_dir / META_DIR
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "manifest.json").write_text(json.dumps({"id": release_id, "hold": True}), encoding="utf-8")
        if approved:
            ReleaseLayout(release_dir).approved_file.write_text("approved\n", encoding="utf-8")
        if behaviour is not None:
            self.daemon.behaviours[release_id] = behaviour
        return release_dir

    def serve(self, release_id: str) -> None:
        """``release_id`` live and approved, its workers started and serving (a deploy that went well)."""
        self.make_release(release_id, approved=True)
        self.paths.current_link.parent.mkdir(parents=True, exist_ok=True)
        self.paths.current_link.unlink(missing_ok=True)
        self.paths.current_link.symlink_to(f"releases/{release_id}")
        self.daemon.start(self.config.server.instances, {"PORT": str(self.config.server.port)})
        self.daemon.wait_until(lambda: all(p.serving for p in self.daemon.processes), 60)

    def connection(self, host: str, port: int, timeout: float | None = None) -> Any:
        """What ``http.client.HTTPConnection(host, port, timeout=...)`` returns while installed."""
        fake = self

        class Connection:
            def __init__(self) -> None:
                self._response: _Response | None = None

            def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
                self._response = fake._answer(port, timeout or 5.0)

            def getresponse(self) -> _Response:
                assert self._response is not None
                return self._response

            def close(self) -> None:
                pass

        return Connection()

    def _answer(self, port: int, timeout: float) -> _Response:
        process = self.daemon.listening_on(port)
        if process is None:
            raise ConnectionRefusedError(f"nothing listens on port {port}")
        behaviour = self.daemon.behaviour(process.release)
        age = self.clock.now - process.started
        if behaviour.hangs_after is not None and age >= behaviour.hangs_after:
            self.clock.sleep(timeout)
            raise TimeoutError("timed out")
        unhealthy = behaviour.unhealthy_after is not None and age >= behaviour.unhealthy_after
        return _Response(500 if unhealthy else behaviour.status, process.release)

    @contextmanager
    def installed(self) -> Iterator[FakeHost]:
        """The fake clock as ``time.monotonic``/``time.sleep``, the fake workers behind ``http.client``: in this
        thread only (a thread an earlier test left running keeps the real ones)."""
        real = (time.monotonic, time.sleep, http.client.HTTPConnection)
        owner = threading.get_ident()

        def ours() -> bool:
            return threading.get_ident() == owner

        def monotonic() -> float:
            return self.clock.monotonic() if ours() else real[0]()

        def sleep(seconds: float) -> None:
            return self.clock.sleep(seconds) if ours() else real[1](seconds)

        def connection(host: str, port: int, timeout: float | None = None) -> Any:
            return self.connection(host, port, timeout) if ours() else real[2](host, port, timeout=timeout)

        for module, name, fake in ((time, "monotonic", monotonic), (time, "sleep", sleep),
                                   (http.client, "HTTPConnection", connection)):
            setattr(module, name, fake)
        try:
            yield self
        finally:
            setattr(time, "monotonic", real[0])  # noqa: B010
            setattr(time, "sleep", real[1])  # noqa: B010
            setattr(http.client, "HTTPConnection", real[2])  # noqa: B010

__all__ = ["FakeExecutor", "FakeHost", "FakePm2"]
