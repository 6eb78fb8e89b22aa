"""Can the app listen on its public port? Checked before the build and before a rollback's switch.

Without it, a port held by another process (a forgotten `next start`, another app) is found only
after the switch: every worker fails to listen, PM2 restarts them in a loop, verify gives up after
20 s and says "worker 0 is launching". The kernel answers in a millisecond: bind the address as Node
would (SO_REUSEADDR), and when it is taken, find who holds it in ``/proc/net/tcp{,6}``. The live app's
own PM2 daemon (the cluster primary holds the listening socket) does not count.

Parsing and judging (pure), binding and reading ``/proc`` (``bind_error``, ``port_holders``).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import pwd
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.core.errors import PortError
from nextdeploy.host.procs import command_line, other_pids

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket, from one row of ``/proc/net/tcp`` or ``tcp6``."""

    inode: int
    uid: int


@dataclass(frozen=True)
class Holder:
    """A process holding a listening socket; ``pid`` is None when its fds are not ours to read."""

    pid: int | None
    command: str | None
    uid: int


def listeners_on(proc_net_tcp: str, port: int, address: str | None = None) -> list[Listener]:
    """The listening sockets on ``port`` in the text of ``/proc/net/tcp`` or ``tcp6``: on any address, or
    (``address``, an IP) those a bind of ``address:port`` collides with: on that address or a wildcard one.
    Another address's listener on the same port (another app, or another host sharing this kernel's network,
    as the fleet tests' hosts do) is not in the way."""
    found = []
    for row in proc_net_tcp.splitlines()[1:]:
        fields = row.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address_hex, _, port_hex = fields[1].rpartition(":")
        if address is not None and not _collides(address_hex, address):
            continue
        try:
            if int(port_hex, 16) == port:
                found.append(Listener(inode=int(fields[9]), uid=int(fields[7])))
        except ValueError:
            continue
    return found


def _collides(address_hex: str, address: str) -> bool:
    """Whether a listener on ``address_hex`` (``/proc/net/tcp{,6}``'s spelling: the address's 32-bit words in
    host byte order, as hex) is in the way of a bind on ``address``: the same address, or a wildcard."""
    try:
        raw = bytes.fromhex(address_hex)
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True  # unreadable: counted, as before
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    listening = ipaddress.ip_address(words)
    if listening.is_unspecified or ip.is_unspecified:
        return True
    if isinstance(listening, ipaddress.IPv6Address) and listening.ipv4_mapped is not None:
        listening = listening.ipv4_mapped
    return listening == ip


def port_problem(host: str, port: int, bind_error: OSError | None, holders: list[Holder],
                 ours: set[int]) -> PortError | None:
    """Why the app cannot listen on ``host:port``, or None. ``holders``: who listens there now;
    ``ours``: the pids of the app's PM2 daemon and workers (the live app holding its own port is fine)."""
    if bind_error is None:
        return None
    if bind_error.errno == errno.EADDRINUSE:
        strangers = [holder for holder in holders if holder.pid not in ours]
        if holders and not strangers:
            return None
        return PortError(f"port {port} is already in use by {_describe(strangers)}",
                         hint="stop that process, or set [server] port to a free port")
    if bind_error.errno == errno.EACCES:
        # A port below 1024: node may be allowed it where we are not (`setcap cap_net_bind_service` on the
        # node binary). Node's own error, if any, shows in the workers' log quoted by a failed activation.
        return None
    if bind_error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return PortError(f"[server] hostname {host!r} is not an address of this host",
                         hint="use 127.0.0.1 behind a reverse proxy, 0.0.0.0 for every address, or one of "
                              "this host's addresses (`ip -brief address`)")
    return PortError(f"cannot listen on {host}:{port}: {bind_error.strerror or bind_error}",
                     hint="check [server] hostname and port")


def _describe(holders: list[Holder]) -> str:
    if not holders:
        return "another process"
    holder = holders[0]
    if holder.pid is None:
        return f"a process of user {_user(holder.uid)}"
    command = f" ({_shorten(holder.command)})" if holder.command else ""
    return f"pid {holder.pid}{command}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _shorten(command: str, limit: int = 80) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 3] + "..."


def bind_error(host: str, port: int) -> OSError | None:
    """Why a listener on ``host:port`` could not be opened now, or None: a bind as Node's (SO_REUSEADDR),
    closed at once."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, str(exc))
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc
    return None


def bound_address(host: str, port: int) -> str | None:
    """The IP a bind on ``host`` (an address or a name) uses, as ``bind_error`` resolves it; None if unknown."""
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
    except (socket.gaierror, IndexError):
        return None


def port_holders(port: int, likely: Iterable[int] = (), address: str | None = None) -> list[Holder]:
    """Who listens on ``port`` (in the way of a bind on ``address``, an IP, when given): each listening
    socket's process, looked for among ``likely`` pids first."""
    listeners: list[Listener] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            listeners += listeners_on(Path(table).read_text(), port, address)
        except OSError:
            continue
    wanted = {listener.inode: listener for listener in listeners}
    holders: list[Holder] = []
    # Lazily: usually a likely pid (the live app's PM2 daemon) holds it, and /proc is never walked.
    likely = list(likely)
    for pid in itertools.chain(likely, (pid for pid in other_pids() if pid not in likely)):
        if not wanted:
            break
        for inode in _socket_inodes(pid) & wanted.keys():
            holders.append(Holder(pid, command_line(pid), wanted.pop(inode).uid))
    holders += [Holder(None, None, listener.uid) for listener in wanted.values()]
    return holders


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes
