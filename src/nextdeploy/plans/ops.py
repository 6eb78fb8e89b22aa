"""Host operations as plain data: what to run, which files to write, which links to switch.

Planners (``nextdeploy.plans.*``) return these; an executor (``nextdeploy.host.executor``) carries them
out on the host or prints them for ``--dry-run``. Each op renders as the shell line it stands for,
which is what a dry run shows and what the literal-string tests assert.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The user part of a URL (https://user:password@host, https://<token>@host): a credential in a git source.
_URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``, as git does in its messages."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


@dataclass(frozen=True)
class Run:
    """Run a program to completion. ``env`` is added to the inherited environment, or replaces it
    when ``clean_env`` is set."""

    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    log_file: Path | None = None  # append stdout+stderr here instead of capturing
    timeout: float | None = None
    clean_env: bool = False
    # Env names whose values never reach a dry run, a log or an error message.
    secret_env: frozenset[str] = frozenset()
    nice: int = 0  # added niceness (lower CPU priority), e.g. for a build beside the live app
    # Directories put before PATH (the inherited one, or ``env``'s): where the app's scripts find the
    # package manager nextdeploy installed for it.
    path: tuple[str, ...] = ()
    # With ``log_file``: each output line is also shown, after this prefix, as it comes (a release hook).
    echo_prefix: str | None = None

    def render(self) -> str:
        env = " ".join(
            ([f"PATH={shlex.quote(':'.join(self.path))}:\"$PATH\""] if self.path else [])
            + [f"{name}={'***' if name in self.secret_env else shlex.quote(value)}"
               for name, value in self.env.items()]
        )
        command = redact_url(shlex.join(self.argv))  # a git source's URL may carry a token
        if self.nice:
            command = f"nice -n {self.nice} {command}"
        line = f"{env} {command}" if env else command
        if self.clean_env:
            line = f"env -i {line}"
        if self.cwd:
            line = f"(cd {shlex.quote(str(self.cwd))} && {line})"
        if self.log_file:
            line += f" >> {shlex.quote(str(self.log_file))} 2>&1"
        return line


@dataclass(frozen=True)
class WriteFile:
    """Write a file atomically (temp file + rename) with a mode."""

    path: Path
    content: str
    mode: int = 0o644
    secret: bool = False  # never show the content

    def render(self) -> str:
        return f"write {self.path} (mode {self.mode:o}, {len(self.content.encode())} bytes)"


@dataclass(frozen=True)
class MakeDirs:
    """``mkdir -p``; with ``mode``, the last directory gets it even when it existed already."""

    path: Path
    mode: int | None = None

    def render(self) -> str:
        line = f"mkdir -p {shlex.quote(str(self.path))}"
        return line if self.mode is None else f"{line} && chmod {self.mode:o} {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class PrivateFile:
    """Create ``path`` empty if it is absent (an existing one is never truncated) and make it 0600: a log another
    program (PM2) appends to, which holds what the app prints, secrets included."""

    path: Path

    def render(self) -> str:
        path = shlex.quote(str(self.path))
        return f"touch {path} && chmod 600 {path}"


@dataclass(frozen=True)
class CopyTree:
    """Copy a directory tree, symlinks kept as symlinks; ``ignore`` names are skipped at any depth.

    ``link_from``: an earlier copy of the tree; a regular file whose bytes (and mode) equal the file at the
    same path there is hard-linked to it instead of copied (``public``: static files nothing rewrites)."""

    src: Path
    dst: Path
    ignore: tuple[str, ...] = ()
    link_from: Path | None = None

    def render(self) -> str:
        src, dst = shlex.quote(str(self.src)), shlex.quote(str(self.dst))
        if self.ignore:  # cp has no --exclude: rsync's (a bare name matches at any depth) is what happens
            excludes = "".join(f" --exclude={shlex.quote(name)}" for name in self.ignore)
            line = f"rsync -a{excludes} {src}/ {dst}/"
        else:
            line = f"cp -a {src}/. {dst}/"
        if self.link_from is not None:
            line += f"  # files identical in {shlex.quote(str(self.link_from))} are hard-linked"
        return line


@dataclass(frozen=True)
class MoveTree:
    """Move the entries of ``src`` into ``dst`` by renames: ``src`` is used up (a build's output, thrown
    away after the release is assembled). An entry that cannot be renamed (another filesystem, a name
    already in ``dst``) is copied instead, as ``CopyTree`` would.

    ``link_from``: an earlier copy of the tree. A file inside a ``node_modules`` directory whose bytes
    equal the file at the same path there is hard-linked to it instead of moved (dependencies rarely
    change between releases, and nothing rewrites them at runtime, unlike ``.next``'s ISR output).
    """

    src: Path
    dst: Path
    link_from: Path | None = None

    def render(self) -> str:
        line = f"mv {shlex.quote(str(self.src))}/* {shlex.quote(str(self.dst))}/  # dotfiles too"
        if self.link_from is not None:
            line += f"; node_modules files identical in {shlex.quote(str(self.link_from))} are hard-linked"
        return line


@dataclass(frozen=True)
class CopyFile:
    src: Path
    dst: Path

    def render(self) -> str:
        return f"cp -p {shlex.quote(str(self.src))} {shlex.quote(str(self.dst))}"


@dataclass(frozen=True)
class Symlink:
    """Point ``link`` at ``target`` atomically: a temp symlink renamed over ``link``."""

    target: str
    link: Path

    def render(self) -> str:
        tmp = f"{self.link}.tmp"
        return (
            f"ln -sfn {shlex.quote(self.target)} {shlex.quote(tmp)} && "
            f"mv -T {shlex.quote(tmp)} {shlex.quote(str(self.link))}"
        )


@dataclass(frozen=True)
class Rename:
    src: Path
    dst: Path

    def render(self) -> str:
        return f"mv -T {shlex.quote(str(self.src))} {shlex.quote(str(self.dst))}"


@dataclass(frozen=True)
class Remove:
    """Delete a file, link or tree; nothing if absent."""

    path: Path

    def render(self) -> str:
        return f"rm -rf {shlex.quote(str(self.path))}"


@dataclass(frozen=True)
class ReloadWorkers:
    """Reload PM2 workers by id through the daemon's RPC socket, ``at_once`` at a time.

    Each worker keeps its env and options (``reloadProcessId`` with an empty env): PM2 starts a new
    worker, waits for its 'ready', then stops the old one. The CLI cannot do this: ``pm2 reload <name>``
    replaces 2 workers strictly one after the other, and ``pm2 reload <id>`` passes the id as a string,
    so PM2 misses the new worker's 'ready' and waits out ``listen_timeout`` (PM2 7.0.4).

    ``until_serving``: return once every new worker is serving, while the old ones still drain (PM2
    answers only after the old worker exited, 0.3 s or more later); ``Executor.settle()`` waits for the
    rest. A failure before that point waits for every call, so the caller can fall back at once."""

    socket: Path
    ids: tuple[int, ...]
    at_once: int = 2
    timeout: float = 60.0  # per worker: its boot to 'ready' plus the old worker's drain
    until_serving: bool = False

    def render(self) -> str:
        calls = " ".join(f"reloadProcessId({{id: {pm_id}}})" for pm_id in self.ids)
        until = ", returning once the new workers serve" if self.until_serving else ""
        return f"# pm2 daemon {shlex.quote(str(self.socket))}: {calls}, {self.at_once} at a time{until}"


@dataclass(frozen=True)
class StopProcesses:
    """SIGINT each process (a launcher drains on it), then SIGKILL whatever is still there after ``grace`` s."""

    pids: tuple[int, ...]
    grace: float

    def render(self) -> str:
        pids = " ".join(str(pid) for pid in self.pids)
        return f"kill -INT {pids}; sleep {self.grace:g}; kill -KILL {pids}  # what is left of them"


@dataclass(frozen=True)
class SpawnWorkers:
    """Start one more PM2 worker like each of ``like`` (the daemon's ``duplicateProcessId``: the same env and
    options, started from ``current``). Returns once the daemon has the requests: it answers each only when
    its worker said 'ready', which a held worker (``held.py``) does only after its release is approved."""

    socket: Path
    like: tuple[int, ...]

    def render(self) -> str:
        calls = " ".join(f"duplicateProcessId({pm_id})" for pm_id in self.like)
        return f"# pm2 daemon {shlex.quote(str(self.socket))}: {calls}"


@dataclass(frozen=True)
class DeleteWorkers:
    """Delete PM2 workers by id (the daemon's ``deleteProcessId``: PM2 asks each to stop, the launcher drains,
    SIGKILL after ``kill_timeout``). ``wait`` False: return once the daemon has the requests (old workers
    that already handed the port over drain on their own)."""

    socket: Path
    ids: tuple[int, ...]
    wait: bool = True
    timeout: float = 30.0

    def render(self) -> str:
        calls = " ".join(f"deleteProcessId({pm_id})" for pm_id in self.ids)
        return f"# pm2 daemon {shlex.quote(str(self.socket))}: {calls}" + ("" if self.wait else ", not waiting")


Op = (Run | WriteFile | MakeDirs | PrivateFile | CopyTree | MoveTree | CopyFile | Symlink | Rename | Remove
      | ReloadWorkers | StopProcesses | SpawnWorkers | DeleteWorkers)
