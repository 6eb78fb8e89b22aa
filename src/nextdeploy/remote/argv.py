"""The ssh and rsync command lines, as plain values: nothing here runs anything.

Every ``ssh`` shares one connection per host (``ControlMaster=auto`` with a ``ControlPath`` in a private
dir and ``ControlPersist``), never prompts (``BatchMode=yes``), notices a dead connection
(``ServerAliveInterval``/``CountMax``), and reads the user's ssh config (aliases, ``IdentityFile``,
``ProxyJump``, known_hosts) or the one given as ``-F``. The remote command is one string quoted for a POSIX
shell, since sshd hands it to the login shell of the remote user.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.core.errors import ConfigError
from nextdeploy.core.fleetconfig import DESTINATION, DESTINATION_HINT, destination_problem


@dataclass(frozen=True)
class SshSettings:
    """How to run ssh: the ``[ssh]`` config plus the timings the transport uses."""

    config_file: Path | None = None  # passed as -F; None: the user's own ~/.ssh/config
    options: tuple[str, ...] = ()  # extra ssh arguments, e.g. ("-o", "ProxyJump=bastion")
    connect_timeout: int = 10  # seconds to set up a connection (TCP and the SSH greeting)
    server_alive_interval: int = 5  # a connection silent this long is probed...
    server_alive_count_max: int = 3  # ...and given up after this many unanswered probes
    control_persist: int = 60  # seconds the shared connection outlives its last use (if we die unannounced)


@dataclass(frozen=True)
class Destination:
    """An ssh destination as the config gives it: an alias of the ssh config, or ``[user@]host[:port]``."""

    text: str  # as written: the name used in every message
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def rsync_target(self, path: str) -> str:
        """``[user@]host:path`` for rsync, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"


def parse_destination(text: str) -> Destination:
    """Read ``[user@]host[:port]`` (``[user@][v6addr][:port]`` for IPv6); a host name may be an ssh alias."""
    problem = destination_problem(text)
    match = DESTINATION.fullmatch(text)
    if problem or not match:
        raise ConfigError(f"[[hosts]] ssh = {text!r} {problem}", hint=DESTINATION_HINT)
    port = int(match["port"]) if match["port"] else None
    return Destination(text, match["ipv6"] or match["host"], match["user"], port)


def remote_command(argv: Sequence[str]) -> str:
    """The one string ssh sends: ``argv`` quoted for the remote user's POSIX shell."""
    return shlex.join(argv)


def ssh_base_argv(settings: SshSettings, control_dir: Path, destination: Destination) -> list[str]:
    """``ssh`` and its options for ``destination``, without the destination itself (rsync's ``-e``).

    Ours come first where they must hold (ssh keeps the first value of an option), the user's options
    next, then defaults they may override."""
    argv = ["ssh"]
    if settings.config_file is not None:
        argv += ["-F", str(settings.config_file)]
    argv += ["-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C",
             "-o", f"ControlPersist={settings.control_persist}"]
    if destination.port is not None:
        argv += ["-p", str(destination.port)]
    argv += list(settings.options)
    argv += ["-o", f"ConnectTimeout={settings.connect_timeout}",
             "-o", f"ServerAliveInterval={settings.server_alive_interval}",
             "-o", f"ServerAliveCountMax={settings.server_alive_count_max}",
             "-o", "LogLevel=ERROR"]  # errors still show; "Warning: Permanently added..." and the like do not
    return argv


def ssh_argv(settings: SshSettings, control_dir: Path, destination: Destination, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` on ``destination``."""
    return [*ssh_base_argv(settings, control_dir, destination), "--", destination.ssh_target, remote_command(argv)]


def control_argv(settings: SshSettings, control_dir: Path, destination: Destination, command: str) -> list[str]:
    """Ask the shared connection to ``destination`` something: ``check`` (is it up?) or ``exit``."""
    return [*ssh_base_argv(settings, control_dir, destination), "-O", command, "--", destination.ssh_target]


def rsync_argv(settings: SshSettings, control_dir: Path, destination: Destination, source: Path, target: str, *,
               link_dest: str | None = None, checksum: bool = True, delete: bool = False,
               options: Sequence[str] = ()) -> list[str]:
    """Copy the tree ``source`` into the dir ``target`` on ``destination`` over the same ssh, with stats.

    ``--checksum``: a fresh build gives every file a new mtime, so rsync's quick check (size + mtime) would
    ship them all. ``link_dest``: a dir on the host (absolute) whose identical files become hard links.
    ``options``: more rsync options (more --link-dest dirs, --copy-dest, filter rules)."""
    argv = ["rsync", "--archive", "--stats"]
    if checksum:
        argv.append("--checksum")
    if delete:
        argv.append("--delete")
    if link_dest is not None:
        argv.append(f"--link-dest={link_dest}")
    argv += list(options)
    argv += ["-e", shlex.join(ssh_base_argv(settings, control_dir, destination)),
             f"{source}/", destination.rsync_target(target.rstrip("/") + "/")]
    return argv


def rsync_pull_argv(settings: SshSettings, control_dir: Path, destination: Destination, source: str, target: Path,
                    *, options: Sequence[str] = ()) -> list[str]:
    """Copy the dir ``source`` on ``destination`` into the tree ``target`` here (the other way round from
    ``rsync_argv``), by checksum, with stats; ``options`` as there (``--link-dest`` dirs here)."""
    return ["rsync", "--archive", "--stats", "--checksum", *options,
            "-e", shlex.join(ssh_base_argv(settings, control_dir, destination)),
            destination.rsync_target(source.rstrip("/") + "/"), f"{target}/"]


@dataclass(frozen=True)
class RsyncStats:
    bytes_sent: int  # everything rsync wrote to the connection: file list, checksums, deltas
    literal_bytes: int  # file contents sent as is (not found on the host)
    files_transferred: int
    bytes_received: int = 0  # everything rsync read from the connection (a pull: the files' contents)


def parse_rsync_stats(output: str) -> RsyncStats:
    """The figures of ``rsync --stats`` output (in the C locale: thousands separated by commas)."""

    def figure(label: str) -> int:
        match = re.search(rf"^{label}: ([0-9][0-9,.]*)", output, re.MULTILINE)
        if not match:
            raise ValueError(f"no {label!r} in rsync --stats output")
        return int(re.sub(r"[,.]", "", match[1]))

    return RsyncStats(figure("Total bytes sent"), figure("Literal data"),
                      figure("Number of regular files transferred"), figure("Total bytes received"))
