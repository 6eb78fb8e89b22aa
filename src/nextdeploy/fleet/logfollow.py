"""``nextdeploy logs --follow`` on a fleet: every host's logs at once, each line prefixed with its host.

The host's side is ``nextdeploy host logs --follow``: it answers the last lines in its one JSON object (as
``host logs`` does), then streams every new line of the app's logs (``out | ...``, as a local ``logs -f``
prints them) until its stdin closes. The controller runs it over ssh on every host (or ``--host``'s), one
session each with its stdin kept open, and prints what each says prefixed with the host's name, until
Ctrl-C (exit 0): then it closes those stdins and every host's side ends, as the fleet lock's does. Should the
controller be killed instead, the pipes close all the same: nothing is left following on a host.

A host that cannot be reached, or whose session ends (its connection lost, the host down), is said in one
line naming it; the others go on. With no host left to follow, the command fails (exit 19).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from nextdeploy.core.errors import Interrupted, NextdeployError
from nextdeploy.fleet import hostcall
from nextdeploy.host import applogs
from nextdeploy.remote.argv import ssh_argv
from nextdeploy.remote.errors import SshError, last_line
from nextdeploy.remote.ssh import RemoteResult

if TYPE_CHECKING:
    from nextdeploy.core.context import Context
    from nextdeploy.fleet.session import FleetSession

STOP_SECONDS = 10.0  # a host's side gets this long to end once its stdin closed, then its ssh is killed
Say = Callable[[list[str]], None]  # prints lines together (no other host's line between them)


# --- the host's side --------------------------------------------------------------------------------------

def follow_until_stdin_closes(ctx: Context, out: IO[str], stdin: IO[bytes] | None = None) -> None:
    """Write every new line of the app's logs to ``out`` (``label | line``) until end of file on ``stdin``
    (the controller's ssh session went away) or ``out`` is closed."""
    from nextdeploy.cli.logs_cmd import log_streams, stream_labels

    closed = threading.Event()
    stream = stdin or sys.stdin.buffer

    def watch() -> None:
        try:
            while stream.read(4096):
                pass
        except (OSError, ValueError):
            pass
        closed.set()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    labels = stream_labels(ctx)

    def emit(path: Any, line: str) -> None:
        try:
            out.write(f"{labels[path]} | {line}\n")
            out.flush()
        except (OSError, ValueError):  # the controller went away: nobody reads
            closed.set()

    applogs.follow(log_streams(ctx), emit, until=closed.is_set)


# --- the controller's side --------------------------------------------------------------------------------

def answer_lines(host: str, answer: dict[str, Any]) -> list[str]:
    """A host's answer to ``host logs`` as printed: its streams' last lines, each prefixed with the host."""
    if "error" in answer:
        return [f"{host} | {'unreachable: ' if not answer.get('reachable', True) else ''}{answer['error']}"]
    lines = []
    for stream in answer.get("streams") or []:
        lines.append(f"{host} | ==> {stream['path']} (last {len(stream['lines'])} lines) <==")
        lines.extend(f"{host} | {line}" for line in stream["lines"])
    if answer.get("not_running"):
        lines.append(f"{host} | {answer['not_running']}: nothing writes these logs now")
    return lines


class HostFollower:
    """``nextdeploy host logs --follow`` on one host through an ssh session kept open, read in a thread."""

    def __init__(self, session: FleetSession, host: str, lines: int, say: Say) -> None:
        self.host = host
        self.say = say
        self.stopping = False
        transport = session.transport
        self.argv = ssh_argv(transport.settings, transport.control_dir, transport.destination(host),
                             hostcall.host_argv(session.roots[host], host, ["logs", "-n", str(lines), "--follow"]))
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        # Its own session: Ctrl-C in the terminal reaches nextdeploy alone, which then closes the stdins.
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, start_new_session=True)
        self.thread = threading.Thread(target=self._read, name=f"logs-{host}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if first:
            try:
                answer = hostcall.answer_of(self.host, "logs", RemoteResult(self.host, (), 0, first, b""))
            except NextdeployError as failed:
                self.say([f"{self.host} | {failed.message}"])
            else:
                self.say(answer_lines(self.host, answer))
                for raw in self.process.stdout:
                    self.say([f"{self.host} | {raw.decode(errors='replace').rstrip(chr(10))}"])
        code = self.process.wait()
        if self.stopping:
            return
        self.errors.seek(0)
        stderr = self.errors.read().decode(errors="replace")
        said = last_line(stderr) if stderr.strip() else ""
        if not first:
            try:  # no answer at all: what the host said instead (no nextdeploy there, ssh failed)
                hostcall.answer_of(self.host, "logs", RemoteResult(self.host, (), code, b"", said.encode()))
            except NextdeployError as failed:
                self.say([f"{self.host} | {failed.message}"])
                return
        self.say([f"{self.host} | lost: its logs stopped (exit {code}{f': {said}' if said else ''})"])

    def stop(self) -> None:
        """End the host's side (its stdin closed), its ssh killed if it does not end in time."""
        self.stopping = True
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.thread.join(STOP_SECONDS)
        self.errors.close()


def follow_fleet_logs(session: FleetSession, config_text: bytes, lines: int, say: Say) -> None:
    """Follow every host's logs of ``session`` until Ctrl-C (returns) or no host is left (``SshError``)."""

    def send(host: str) -> str | None:
        try:
            hostcall.send_config(session.transport, host, session.roots[host], config_text)
            return None
        except SshError as lost:
            return f"unreachable: {lost.message}"
        except NextdeployError as failed:
            return failed.message

    output_closed = threading.Event()  # nobody reads us any more (`logs -f | head`): the end, as Ctrl-C is

    def say_or_end(said: list[str]) -> None:
        try:
            say(said)
        except (OSError, ValueError):
            output_closed.set()

    problems = session.each(send)
    for host, problem in problems.items():
        if problem is not None:
            say_or_end([f"{host} | {problem}"])
    followers: list[HostFollower] = []
    try:
        for host in session.names:
            if problems[host] is None:
                followers.append(HostFollower(session, host, lines, say_or_end))
        while any(follower.thread.is_alive() for follower in followers) and not output_closed.is_set():
            for follower in followers:
                follower.thread.join(0.2)
        if output_closed.is_set():
            return
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Interrupted):  # SIGTERM or SIGHUP: stopped, not ended by the user
            raise
        return  # Ctrl-C: the way to end following
    finally:
        for follower in followers:
            follower.stop()
    raise SshError(session.names[-1], "no host is left to follow: each is named above",
                   hint="fix what is said of each host, then run `nextdeploy logs --follow` again")
