"""The public-port check: /proc/net/tcp parsing and the verdict (pure), and real sockets on loopback."""

from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.host.ports import Holder, Listener, bind_error, listeners_on, port_holders, port_problem
from nextdeploy.host.probe import free_port
from support.processes import port_held_elsewhere

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0
   1: 0100007F:0BB8 0100007F:D6A2 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0
"""
ANY6 = "0" * 32
PROC_NET_TCP6 = (
    "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    f"   0: {ANY6}:0BB8 {ANY6}:0000 0A 00000000:00000000 00:00000000 00000000   33        0 444 1 0 100 0 0 10 0\n"
)


def test_listeners_on_reads_listening_rows_of_both_tables() -> None:
    # Port 3000 = 0x0BB8: row 1 is an established connection to it, not a listener.
    assert listeners_on(PROC_NET_TCP, 3000) == [Listener(inode=111, uid=1000)]
    assert listeners_on(PROC_NET_TCP, 8080) == [Listener(inode=333, uid=0)]
    assert listeners_on(PROC_NET_TCP6, 3000) == [Listener(inode=444, uid=33)]
    assert listeners_on(PROC_NET_TCP, 3001) == []
    assert listeners_on("header only\n  0: garbage\n", 3000) == []


IN_USE = OSError(errno.EADDRINUSE, "Address already in use")


def test_a_free_port_or_one_the_live_app_holds_is_fine() -> None:
    assert port_problem("127.0.0.1", 3000, None, [], set()) is None
    daemon = Holder(pid=41, command="PM2 v7.0.4: God Daemon (/srv/app/.pm2)", uid=1000)
    assert port_problem("127.0.0.1", 3000, IN_USE, [daemon], ours={41, 42, 43}) is None


def test_a_port_held_by_anyone_else_is_an_error_naming_them() -> None:
    stranger = Holder(pid=7, command="node   /home/me/old-app/server.js", uid=1000)
    daemon = Holder(pid=41, command="PM2 daemon", uid=1000)
    problem = port_problem("127.0.0.1", 3000, IN_USE, [daemon, stranger], ours={41})
    assert problem is not None and problem.exit_code == ExitCode.PORT == 15
    assert problem.message == "port 3000 is already in use by pid 7 (node /home/me/old-app/server.js)"
    assert problem.hint is not None and "[server] port" in problem.hint

    # Another user's process: no pid to show (its fds are not ours to read), but who it is.
    hidden = port_problem("127.0.0.1", 3000, IN_USE, [Holder(pid=None, command=None, uid=0)], ours={41})
    assert hidden is not None and hidden.message == "port 3000 is already in use by a process of user root"
    # Held, but gone by the time we looked (or not found at all): still in use, by someone.
    vanished = port_problem("127.0.0.1", 3000, IN_USE, [], ours={41})
    assert vanished is not None and vanished.message == "port 3000 is already in use by another process"


def test_a_privileged_port_is_left_to_node() -> None:
    # `setcap cap_net_bind_service=+ep $(which node)` lets node listen on port 80 where Python may not.
    assert port_problem("0.0.0.0", 80, OSError(errno.EACCES, "Permission denied"), [], set()) is None


@pytest.mark.parametrize(("code", "expected"), [
    (errno.EADDRNOTAVAIL, "[server] hostname '10.9.8.7' is not an address of this host"),
    (errno.EINVAL, "cannot listen on 10.9.8.7:80"),
])
def test_other_bind_errors_say_what_to_change(code: int, expected: str) -> None:
    problem = port_problem("10.9.8.7", 80, OSError(code, os.strerror(code)), [], set())
    assert problem is not None and problem.message.startswith(expected) and problem.hint


def test_a_real_listener_in_another_process_is_found_with_its_pid() -> None:
    port = free_port()
    assert bind_error("127.0.0.1", port) is None
    with port_held_elsewhere(port) as holder:
        error = bind_error("127.0.0.1", port)
        assert error is not None and error.errno == errno.EADDRINUSE
        holders = port_holders(port)
        assert [h.pid for h in holders] == [holder.pid]
        assert holders[0].command is not None and "socket" in holders[0].command
        problem = port_problem("127.0.0.1", port, error, holders, ours={os.getpid()})
        assert problem is not None and f"pid {holder.pid} " in problem.message
        # The same listener counted as the live app's: no problem.
        assert port_problem("127.0.0.1", port, error, holders, ours={holder.pid}) is None
    assert bind_error("127.0.0.1", port) is None  # SO_REUSEADDR: the closed listener's remains do not count


def test_our_own_listener_is_found_when_we_say_where_to_look() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert [h.pid for h in port_holders(port, likely=[os.getpid()])] == [os.getpid()]


def test_an_address_of_no_interface_here_is_reported() -> None:
    error = bind_error("192.0.2.1", free_port())  # TEST-NET-1: documentation only, on no interface
    assert error is not None and error.errno == errno.EADDRNOTAVAIL


def test_a_port_to_listen_on_later_is_below_the_ephemeral_range() -> None:
    # A listen(0) (the launcher's private one) or an outgoing connection never gets it meanwhile.
    from pathlib import Path

    from nextdeploy.host.probe import listen_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {listen_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports) and len(ports) > 1
    assert all(bind_error("127.0.0.1", port) is None for port in ports)


# /proc/net/tcp rows: 127.0.0.2:3000, 127.0.0.3:3000 and 0.0.0.0:4000 listening (little-endian words).
_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0300007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 00000000:0FA0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1
"""
# tcp6: [::]:3000 and [::ffff:127.0.0.2]:4000
_TCP6 = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 0000000000000000:0000 0A 0:0 0:0 0 0 0 444 1
   1: 0000000000000000FFFF00000200007F:0FA0 0000000000000000:0000 0A 0:0 0:0 0 0 0 555 1
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the rows above are a little-endian kernel's")
def test_only_listeners_in_the_way_of_the_address_count() -> None:
    """Hosts sharing one kernel's network (the fleet tests') listen on the same port at other addresses:
    those are not in the way of this host's bind; the same address and a wildcard one are."""
    inodes = lambda text, port, address: [listener.inode for listener in listeners_on(text, port, address)]  # noqa: E731
    assert inodes(_TCP, 3000, None) == [111, 222]
    assert inodes(_TCP, 3000, "127.0.0.2") == [111]
    assert inodes(_TCP, 3000, "0.0.0.0") == [111, 222]
    assert inodes(_TCP, 4000, "127.0.0.9") == [333]  # 0.0.0.0:4000 holds every address
    assert inodes(_TCP6, 3000, "127.0.0.5") == [444]  # [::] too
    assert inodes(_TCP6, 4000, "127.0.0.2") == [555] and inodes(_TCP6, 4000, "127.0.0.3") == []
