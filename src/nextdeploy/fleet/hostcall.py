"""Running nextdeploy on a host of the fleet: the controller's side of ``nextdeploy host ...``.

Every host runs the very nextdeploy the controller runs (``fleet.setup`` installs it under
``<root>/tools/nextdeploy-<version>``) with the fleet's config, sent to ``<root>/nextdeploy.toml`` (0600: it
may hold secrets) and applied as that host (``--as <its ssh value>``: its hostname and root over
``[server]``'s). Each call answers one JSON object (``cli.host_cmd``): its ``result``, or its error raised
here as a ``HostFailedError`` naming the host and the step, with the host's exit code.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import nextdeploy
from nextdeploy.activation.gate import ready_line
from nextdeploy.core.errors import HostFailedError, HostPathError, ToolMissingError
from nextdeploy.fleet.setup import tools_prefix
from nextdeploy.remote.errors import RemoteTimeoutError, last_line
from nextdeploy.remote.ssh import RemoteResult, SshTransport

CONFIG_NAME = "nextdeploy.toml"
# The copy the read-only commands (status, releases, logs) send and read with: they take no lock, and must
# never change the config the hosts of a running deploy work with.
READ_CONFIG_NAME = ".nextdeploy-read.toml"
NOT_FOUND = 127  # the shell's code for a command it cannot find

# $1 the host's config path: the config comes on stdin, into a file that is 0600 from its creation.
_WRITE_PRIVATE = r"""
mkdir -p -- "$(dirname -- "$1")" || exit 1
tmp="$1.tmp.$$"
(umask 077 && cat > "$tmp") && chmod 600 "$tmp" && mv -f -- "$tmp" "$1"
"""


def host_config_path(root: str, name: str = CONFIG_NAME) -> str:
    return f"{root.rstrip('/')}/{name}"


def host_binary(root: str) -> str:
    """The host's own nextdeploy, the very version of this one (``fleet.setup`` installs it)."""
    return f"{tools_prefix(root.rstrip('/'), nextdeploy.__version__)}/bin/nextdeploy"


def host_argv(root: str, as_host: str, subcommand: Sequence[str], config: str = CONFIG_NAME) -> list[str]:
    """``nextdeploy host <subcommand>`` as the host's own nextdeploy runs it, with the fleet's config (the
    file ``config`` under the root)."""
    return [host_binary(root), "host", *subcommand, "-c", host_config_path(root, config), "--as", as_host]


def send_config(transport: SshTransport, host: str, root: str, text: bytes, name: str = CONFIG_NAME) -> None:
    """Write the fleet's config to the host as ``<root>/<name>`` (on ssh's stdin, never on a command line)."""
    path = host_config_path(root, name)
    result = transport.run(host, ["sh", "-c", _WRITE_PRIVATE, "sh", path], stdin=text, timeout=60)
    if not result.ok:
        raise HostPathError(f"cannot write {path} on {host}: {last_line(result.error_text)}",
                            hint=f"check that the ssh user of {host} can write {root}")


def call(transport: SshTransport, host: str, root: str, subcommand: Sequence[str], *,
         timeout: float | None = None, config: str = CONFIG_NAME) -> dict[str, Any]:
    """Run ``nextdeploy host <subcommand>`` on ``host``; its ``result``, or its error raised."""
    answer = transport.run(host, host_argv(root, host, subcommand, config), timeout=timeout)
    return answer_of(host, subcommand[0], answer)


def answer_of(host: str, step: str, answer: RemoteResult) -> dict[str, Any]:
    """The ``result`` of one host command's JSON answer; its error as a ``HostFailedError``."""
    document = _document(answer.text)
    if document is None:
        if answer.exit_code == NOT_FOUND:
            raise ToolMissingError(f"{host} has no nextdeploy {nextdeploy.__version__} under its root",
                                   hint="run `nextdeploy setup` (deploy runs it when a host needs it)")
        said = last_line(answer.error_text) or f"exit code {answer.exit_code}, no output"
        raise HostFailedError(host, step, 1, f"nextdeploy answered no JSON: {said}",
                              hint="run the same command with --debug on that host, and please report it")
    if document.get("ok"):
        result = document.get("result")
        return result if isinstance(result, dict) else {}
    error = document.get("error") or {}
    raise HostFailedError(host, step, int(error.get("code", 1)), str(error.get("message", "failed")),
                          hint=error.get("hint"), details=list(error.get("details") or []))


def _document(stdout: str) -> dict[str, Any] | None:
    """The JSON object a host command printed: its last line of stdout."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        document = json.loads(lines[-1])
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


class StartedCall:
    """``nextdeploy host <subcommand>`` running on a host, talked with while it runs: started at once, its
    stdin open (``send``; closed by ``close_stdin``, or once it ended), each line of its stderr handed to
    ``on_line`` as it comes (progress; its JSON answer is on stdout alone); ``answer()`` is that answer, as
    ``call``'s. A call that does not end within ``timeout`` s is killed (``RemoteTimeoutError``)."""

    def __init__(self, transport: SshTransport, host: str, argv: list[str], *, step: str, what: str,
                 timeout: float | None = None, on_line: Callable[[str], None] | None = None) -> None:
        self.transport, self.host, self.argv, self.step, self.what = transport, host, argv, step, what
        self.timeout = timeout
        self._on_line = on_line
        self._killed = False
        self._stdin_lock = threading.Lock()
        self._stderr = bytearray()
        self._stdout: list[bytes] = []
        self.process = transport.start(host, self.argv)
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True, name=f"call-err-{host}"),
                         threading.Thread(target=self._read_stdout, daemon=True, name=f"call-out-{host}")]
        for reader in self._readers:
            reader.start()
        self._timer = threading.Timer(timeout, self._kill) if timeout is not None else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            text = line.decode(errors="replace").rstrip("\r\n")
            if self._on_line is not None:
                self._on_line(text)
            if self._keeps(text):
                self._stderr += line

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self._stdout.append(self.process.stdout.read())

    def _keeps(self, line: str) -> bool:
        """Whether a line of its stderr is kept for its error message (all of them, here)."""
        return True

    def _kill(self) -> None:
        self._killed = True
        self.process.kill()

    @property
    def running(self) -> bool:
        """Whether its stderr is still open (the command has not ended)."""
        return self._readers[0].is_alive()

    def send(self, text: str, close: bool = False) -> None:
        """``text`` to its stdin (``close``: then end of file); nothing once stdin is closed or it ended."""
        with self._stdin_lock:
            stdin = self.process.stdin
            assert stdin is not None
            if stdin.closed:
                return
            try:
                stdin.write(text.encode())
                stdin.flush()
            except OSError:  # it ended already (BrokenPipeError): its answer says how
                close = True  # closed even so: a word left in its buffer would fail again when collected
            finally:
                if close:
                    with contextlib.suppress(OSError):
                        stdin.close()

    def close_stdin(self) -> None:
        self.send("", close=True)

    def answer(self) -> dict[str, Any]:
        """Wait for the command's end: its ``result``, or its error raised (``HostFailedError``, ``SshError``)."""
        code = self.process.wait()
        for reader in self._readers:
            reader.join()
        if self._timer is not None:
            self._timer.cancel()
        self.close_stdin()
        # Killed by its timer, not ended on its own (a timer that runs out after the end, before this
        # answer is read, kills nothing: the command's own code stands).
        if self._killed and code == -signal.SIGKILL:
            raise RemoteTimeoutError(
                self.host, f"`{self.what}` on {self.host} did not finish within {self.timeout:g} s",
                hint=f"check what keeps {self.host} busy (or the network to it), then run the command again")
        done = self.transport.result_of(self.host, self.argv, code, b"".join(self._stdout), bytes(self._stderr))
        return answer_of(self.host, self.step, done)


class GatedCall(StartedCall):
    """``nextdeploy host activate <id> --gate`` running on a host (``activation.gate``): started at once;
    ``proven()`` waits for its ready line (the release passed its window there, nothing switched), then
    ``go()`` lets it cut over, ``abort()`` rejects it; ``answer()`` is its JSON answer, as ``call``'s.
    A call that does not end within ``timeout`` s is killed (``RemoteTimeoutError``)."""

    def __init__(self, transport: SshTransport, host: str, root: str, release: str, *,
                 timeout: float | None = None, config: str = CONFIG_NAME) -> None:
        self.release = release
        self._ready = threading.Event()
        self._ready_line = ready_line(release)
        super().__init__(transport, host, host_argv(root, host, ["activate", release, "--gate"], config),
                         step="activate", what=f"host activate {release}", timeout=timeout, on_line=self._see)

    def _see(self, line: str) -> None:
        if line.strip() == self._ready_line:
            self._ready.set()

    def _keeps(self, line: str) -> bool:
        return line.strip() != self._ready_line  # the gate's word, not a reason for an error

    def proven(self) -> bool:
        """Wait until the release waits at the host's gate (True) or the command ended without reaching it
        (False: ``answer()`` says how: live already, or failed)."""
        while not self._ready.wait(0.1):
            if not self.running:  # stderr closed: the command ended
                return self._ready.is_set()
        return True

    def go(self) -> None:
        self.send("go\n", close=True)

    def abort(self) -> None:
        """One word to the gate, once; then its stdin closes (a second word is not read)."""
        self.send("abort\n", close=True)
