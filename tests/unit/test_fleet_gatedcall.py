"""fleet.hostcall.GatedCall, the controller's side of ``host activate <id> --gate``, over a fake transport whose
``start()`` runs a real process: a small Python script standing in for the host's nextdeploy (it says the
ready line on stderr, reads ``go`` or ``abort`` on stdin, answers one JSON object on stdout and exits with its
code). tests/integration/test_fleet_deploy.py runs the real one over ssh."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import cast

import pytest

from nextdeploy.activation.gate import ready_line
from nextdeploy.core.errors import ExitCode, HostFailedError, ToolMissingError
from nextdeploy.fleet.hostcall import GatedCall, host_argv
from nextdeploy.remote.errors import RemoteTimeoutError
from nextdeploy.remote.ssh import RemoteResult, SshTransport

RELEASE = "20260101-000000-abc"

# argv: the ready line, the mode. Every mode but "missing" says a stray line on stderr first.
HOST = r"""
import json, os, signal, sys, time
ready, mode = sys.argv[1], sys.argv[2]

def answer(document, code):
    print(json.dumps(document), flush=True)
    sys.exit(code)

def failed(code, message):
    answer({"ok": False, "error": {"code": code, "message": message}}, code)

if mode == "missing":
    print("sh: 1: /srv/shop/tools/nextdeploy-0/bin/nextdeploy: not found", file=sys.stderr)
    sys.exit(127)
print("booting the release's workers held", file=sys.stderr, flush=True)
if mode == "live":
    answer({"ok": True, "result": {"release": "r", "live_already": True}}, 0)
if mode == "rejected":
    failed(9, "r exited in its stability window")
if mode == "crash":
    sys.exit(1)
if mode == "silent":
    time.sleep(60)
print(ready, file=sys.stderr, flush=True)
if mode == "hang":
    time.sleep(60)
word = sys.stdin.readline().strip()
if mode == "dies":
    os.kill(os.getpid(), signal.SIGKILL)
if word == "go":
    answer({"ok": True, "result": {"release": "r", "switched": True}}, 0)
failed(21, "r was proven but not switched to: the controller said " + (word or "nothing"))
"""


class FakeTransport:
    """``start`` runs the script above in ``mode``; ``result_of`` as ssh's when ssh itself did not fail."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.started: list[tuple[str, list[str]]] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, host: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        self.started.append((host, list(argv)))
        process = subprocess.Popen([sys.executable, "-c", HOST, ready_line(RELEASE), self.mode],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def result_of(self, host: str, argv: Sequence[str], exit_code: int, stdout: bytes, stderr: bytes) -> RemoteResult:
        return RemoteResult(host, tuple(argv), exit_code, stdout, stderr)


@pytest.fixture
def transports() -> Iterator[list[FakeTransport]]:
    made: list[FakeTransport] = []
    yield made
    for transport in made:
        for process in transport.processes:
            if process.poll() is None:
                process.kill()  # by its pid
            process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None and not stream.closed:
                    try:
                        stream.close()
                    except OSError:
                        pass


def _start(transports: list[FakeTransport], mode: str, timeout: float | None = 30) -> GatedCall:
    transport = FakeTransport(mode)
    transports.append(transport)
    return GatedCall(cast(SshTransport, transport), "web1", "/srv/shop", RELEASE, timeout=timeout)


def test_proven_waits_for_the_ready_line_then_go_switches(transports: list[FakeTransport]) -> None:
    call = _start(transports, "gate")
    assert transports[0].started == [("web1", host_argv("/srv/shop", "web1", ["activate", RELEASE, "--gate"]))]
    assert call.proven() is True
    assert call.process.poll() is None  # it waits at its gate for the word
    call.go()
    assert call.answer() == {"release": "r", "switched": True}
    assert call.process.returncode == 0


def test_abort_is_the_refused_answer(transports: list[FakeTransport]) -> None:
    call = _start(transports, "gate")
    assert call.proven()
    call.abort()
    call.go()  # one word only: the first
    with pytest.raises(HostFailedError) as error:
        call.answer()
    assert error.value.exit_code == ExitCode.ABORTED
    assert "web1 failed at activate: r was proven but not switched to: the controller said abort" in error.value.message


def test_a_command_that_ends_before_its_gate_is_not_proven_and_answers_why(transports: list[FakeTransport]) -> None:
    live = _start(transports, "live")
    assert live.proven() is False
    assert live.answer() == {"release": "r", "live_already": True}
    rejected = _start(transports, "rejected")
    assert rejected.proven() is False
    with pytest.raises(HostFailedError) as error:
        rejected.answer()
    assert error.value.exit_code == ExitCode.PREFLIGHT_FAILED
    assert error.value.message == "web1 failed at activate: r exited in its stability window"


def test_what_the_host_said_on_stderr_is_the_message_of_an_answer_without_json(
        transports: list[FakeTransport]) -> None:
    crashed = _start(transports, "crash")  # a stray line, then exit 1, no JSON
    assert crashed.proven() is False
    with pytest.raises(HostFailedError, match="answered no JSON: booting the release's workers held"):
        crashed.answer()
    # killed after its ready line, saying nothing more: the ready line is the protocol's, not the reason
    died = _start(transports, "dies")
    assert died.proven()
    died.go()
    with pytest.raises(HostFailedError) as error:
        died.answer()
    assert "ready" not in error.value.message
    assert error.value.message.endswith("nextdeploy answered no JSON: booting the release's workers held")


def test_a_host_without_its_nextdeploy_is_told_to_run_setup(transports: list[FakeTransport]) -> None:
    call = _start(transports, "missing")
    assert call.proven() is False
    with pytest.raises(ToolMissingError, match=r"web1 has no nextdeploy .* under its root"):
        call.answer()


def test_a_command_that_never_answers_is_killed_at_its_timeout(transports: list[FakeTransport]) -> None:
    began = time.monotonic()
    waiting = _start(transports, "hang", timeout=2.0)  # proven, then deaf to its word
    assert waiting.proven()
    waiting.go()
    with pytest.raises(RemoteTimeoutError, match=f"`host activate {RELEASE}` on web1 did not finish within 2 s"):
        waiting.answer()
    assert 2.0 <= time.monotonic() - began < 12
    assert waiting.process.returncode is not None and waiting.process.returncode < 0  # killed
    silent = _start(transports, "silent", timeout=0.5)  # never reaches its gate
    assert silent.proven() is False  # once killed
    with pytest.raises(RemoteTimeoutError):
        silent.answer()


def test_a_command_that_ended_in_time_is_not_a_timeout_however_late_its_answer_is_read(
        transports: list[FakeTransport]) -> None:
    began = time.monotonic()
    call = _start(transports, "live", timeout=1.0)
    assert call.proven() is False
    call.process.wait()
    time.sleep(max(0.0, began + 1.5 - time.monotonic()))  # its timer ran out after its end, before answer()
    assert call.answer() == {"release": "r", "live_already": True}


def test_a_word_to_a_command_that_ended_closes_its_stdin_quietly(transports: list[FakeTransport]) -> None:
    call = _start(transports, "rejected")
    assert call.proven() is False
    call.process.wait()
    call.go()  # a broken pipe: its answer says how it ended
    stdin = call.process.stdin
    assert stdin is not None and stdin.closed  # not left with "go" in its buffer, to fail again when collected
    with pytest.raises(HostFailedError):
        call.answer()
