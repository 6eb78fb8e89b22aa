"""SIGTERM and SIGHUP stop a run as Ctrl-C does, with its clean-up (real processes, real signals)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nextdeploy.activation.preflight import run_preflight
from nextdeploy.core import interrupts
from nextdeploy.core.config import parse_config
from nextdeploy.core.paths import ReleaseLayout
from support.processes import as_in_a_terminal, gone_soon

WAIT_FOR_A_SIGNAL = """
import os, signal, sys, time
from nextdeploy.core import interrupts
from nextdeploy.core.errors import Interrupted
{before}
interrupts.install()
try:
    # Inside the try: the signal may land while print() is still returning, after "ready" was written.
    print("ready", flush=True)
    time.sleep(30)
except Interrupted as exc:
    print("cleaning up after", exc.signal_name, flush=True)  # after a hang-up: must not raise
    with open(sys.argv[1], "w") as marker:
        marker.write(exc.signal_name)
"""


@contextmanager
def _waiting_for_a_signal(tmp_path: Path, before: str = "", **streams: int) -> Iterator[subprocess.Popen[bytes]]:
    """The script above, running; killed at the end if the test left it running."""
    script = WAIT_FOR_A_SIGNAL.format(before=before)
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "marker")], stdin=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=as_in_a_terminal,
                               **streams)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_raise_interrupted(tmp_path: Path, signum: int) -> None:
    with _waiting_for_a_signal(tmp_path, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "marker").read_text() == signal.Signals(signum).name


def test_an_ignored_sighup_stays_ignored_as_nohup_wants(tmp_path: Path) -> None:
    ignoring = "signal.signal(signal.SIGHUP, signal.SIG_IGN)"
    with _waiting_for_a_signal(tmp_path, before=ignoring, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None and not (tmp_path / "marker").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "marker").read_text() == "SIGTERM"


def test_after_a_hang_up_the_clean_up_can_still_print(tmp_path: Path) -> None:
    # The SSH session dropped: the terminal is gone and a write to it fails with EIO, which would break
    # the clean-up half-way (the put-back of the previous release prints its steps).
    master, terminal = pty.openpty()
    with _waiting_for_a_signal(tmp_path, stdout=terminal, stderr=terminal) as process:
        os.close(terminal)
        assert os.read(master, 100).startswith(b"ready")
        os.close(master)  # hang up
        process.send_signal(signal.SIGHUP)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "marker").read_text() == "SIGHUP"


HEALTHY_SERVER = """
require('fs').writeFileSync(process.argv[2], String(process.pid));
require('http').createServer((req, res) => res.end('{"status":"ok"}')).listen(+process.env.PORT, '127.0.0.1');
"""


def test_an_interrupted_preflight_stops_its_server(tmp_path: Path) -> None:
    # In its own session, the preflight server gets neither the terminal's Ctrl-C nor a signal sent to the
    # deployer: the deployer must stop it (it used to on a failed gate only).
    layout = ReleaseLayout(tmp_path / "release")
    layout.launcher_file.parent.mkdir(parents=True)
    pid_file = tmp_path / "server.pid"
    layout.launcher_file.write_text(HEALTHY_SERVER.replace("process.argv[2]", repr(str(pid_file))))
    config = parse_config({"app": {"name": "hello", "source": "app"}, "server": {"root": str(tmp_path / "root")},
                           "health": {"path": "/", "stable_for": 30}}, tmp_path)

    def interrupt_once_healthy() -> None:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # inside the stability window
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C as a terminal's foreground process has it (a background job of a script ignores SIGINT).
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_once_healthy, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_preflight(config, layout, "node", {}, tmp_path / "preflight.log")
    finally:
        signal.signal(signal.SIGINT, earlier)
    assert time.monotonic() - started < 20
    server = int(pid_file.read_text())
    assert gone_soon(server)


def test_deferred_records_the_stop_signals_and_gives_the_handlers_back() -> None:
    """Under ``deferred`` (a fleet rollout) a stop signal is recorded, not raised; an ignored one stays
    ignored; the handlers before it come back after it."""
    before = {signum: signal.getsignal(signum) for signum in interrupts.STOP_SIGNALS}
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with interrupts.deferred() as stops:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 5
            while len(stops.signals) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert stops.signals == ["SIGINT", "SIGTERM"] and stops.first == "SIGINT"
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
    assert {signum: signal.getsignal(signum) for signum in interrupts.STOP_SIGNALS} == before


def test_deferred_outside_the_main_thread_defers_nothing() -> None:
    found: list[object] = []

    def work() -> None:
        with interrupts.deferred() as stops:
            found.append(stops.signals)
            found.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert found == [[], signal.getsignal(signal.SIGINT)]
