"""Can the app listen on its public port? Checked before the build and before a rollback's switch.

Without it, a port held by another process (a forgotten `next start`, another app) is found only
after the switch: every worker fails to listen, PM2 restarts them in a loop, verify gives up after
20 s and says "worker 0 is launching". The kernel answers in a millisecond: bind the address as Node
would (SO_REUSEADDR), and when it is taken, find who holds it in ``/proc/net/tcp{,6}``. The live app's
own PM2 daemon (the cluster primary holds the listening socket) does not count.

Parsing and judging here; binding and reading ``/proc`` in ``nextdeploy.host.executor``.
"""

from __future__ import annotations

import errno
import pwd
from dataclasses import dataclass

from nextdeploy.core.errors import PortError

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


def listeners_on(proc_net_tcp: str, port: int) -> list[Listener]:
    """The listening sockets on ``port`` (any address) in the text of ``/proc/net/tcp`` or ``tcp6``."""
    found = []
    for row in proc_net_tcp.splitlines()[1:]:
        fields = row.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            if int(port_hex, 16) == port:
                found.append(Listener(inode=int(fields[9]), uid=int(fields[7])))
        except ValueError:
            continue
    return found


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
