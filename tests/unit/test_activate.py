"""Verify's look at the public port (a real HTTP server on loopback; the whole activation: integration)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextdeploy.activation import activate
from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import Pm2Error
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.pm2.client import Pm2


def _serving(releases: Iterator[str]) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A server that answers the health path healthy, each answer from the next release of ``releases``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("x-nextdeploy-release", next(releases))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _context(tmp_path: Path, port: int) -> Context:
    config = parse_config({"app": {"name": "hello", "source": "app"},
                           "server": {"root": str(tmp_path / "root"), "port": port}}, tmp_path)
    return Context(config, LocalExecutor(), Reporter(force_plain=True))


def test_old_workers_closing_their_listeners_may_answer_for_a_moment(tmp_path: Path) -> None:
    server, port = _serving(iter(["old"] * 3 + ["new"] * 10))
    try:
        activate._probe_public_port(_context(tmp_path, port), "new")
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_that_keeps_answering_from_another_release_fails_verify(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activate, "OLD_LISTENER_GRACE", 0.3)
    server, port = _serving(iter(["new"] * 3 + ["old"] * 1000))
    try:
        with pytest.raises(Pm2Error, match="answered from release old, not new"):
            activate._probe_public_port(_context(tmp_path, port), "new")
    finally:
        server.shutdown()
        server.server_close()


def test_the_workers_error_log_since_the_switch_is_quoted_once_per_line(tmp_path: Path) -> None:
    log = tmp_path / "pm2-hello.err.log"
    log.write_text("2026-11-22T06:00:00: from an earlier deploy\n")
    offset = log.stat().st_size
    with log.open("a") as more:
        for second in range(4):
            more.write(f"2026-11-22T06:00:0{second}: [nextdeploy r2 pid=1{second}] not ready: bind EADDRINUSE\n")
        more.write("2026-11-22T06:00:05: Error: Cannot find module 'sharp'\n\n")
        # A crash's stack frames would push the error itself out of the last lines: left out.
        more.write("".join(f"2026-11-22T06:00:05:     at frame{i} (/srv/x.js:{i}:1)\n" for i in range(8)))
    assert activate.written_since(log, offset) == [
        f"the workers' error log since the switch ({log}):",
        "  | [nextdeploy r2 pid=10] not ready: bind EADDRINUSE",
        "  | [nextdeploy r2 pid=11] not ready: bind EADDRINUSE",
        "  | [nextdeploy r2 pid=12] not ready: bind EADDRINUSE",
        "  | [nextdeploy r2 pid=13] not ready: bind EADDRINUSE",
        "  | Error: Cannot find module 'sharp'",
    ]
    with log.open("a") as more:
        more.write("2026-11-22T06:00:06: Error: Cannot find module 'sharp'\n")
    assert activate.written_since(log, offset)[-1] == "  | Error: Cannot find module 'sharp'  (x2)"
    assert activate.written_since(log, log.stat().st_size) == []  # nothing new: no heading either
    assert activate.written_since(tmp_path / "missing.log", 0) == []
    log.write_text("2026-11-22T06:01:00: after a pm2 flush\n")  # shorter than the offset: all of it is new
    assert activate.written_since(log, offset)[1:] == ["  | after a pm2 flush"]


def test_workers_the_daemon_lost_track_of_are_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This test process plays PM2's daemon: its children working in a release are its workers; the one
    # missing from its process list is lost (`pm2 delete` during a crash loop's restart leaves such).
    ctx = _context(tmp_path, 1)
    ctx = Context(ctx.config, LocalExecutor(), ctx.reporter)
    release = ctx.paths.releases_dir / "r1"
    release.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # SIGINT's default action set explicitly (an ignored SIGINT would be inherited from the test run), and
    # only then "ready".
    sleep = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                   "print('ready', flush=True); time.sleep(60)"]
    listed, lost, other = (subprocess.Popen(sleep, cwd=cwd, stdout=subprocess.PIPE, text=True)
                           for cwd in (release, release, elsewhere))
    try:
        assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in (listed, lost, other))
        pm2 = Pm2("pm2", tmp_path / "pm2", ctx.executor)
        monkeypatch.setattr(pm2, "daemon_pid", os.getpid)
        monkeypatch.setattr(pm2, "processes", lambda: [{"name": "hello", "pid": listed.pid}])
        assert pm2.lost_workers(ctx.paths.releases_dir) == [lost.pid]
        activate.stop_lost_workers(ctx, pm2)
        assert lost.wait(timeout=5) == -signal.SIGINT
        assert listed.poll() is None and other.poll() is None
        assert pm2.lost_workers(ctx.paths.releases_dir) == []
        monkeypatch.setattr(pm2, "daemon_pid", lambda: None)  # no daemon: nothing of its can be lost
        assert pm2.lost_workers(ctx.paths.releases_dir) == []
    finally:
        for process in (listed, lost, other):
            process.kill()
            process.wait()
