"""The SSH transport against real test hosts: real sshd processes, each in its own mount namespace on its
own loopback address (tests/support/hosts.py), real ssh, rsync and nginx."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextdeploy.cli.main import format_error
from nextdeploy.core.errors import ExitCode
from nextdeploy.remote.argv import SshSettings
from nextdeploy.remote.errors import (
    HostKeyError,
    HostUnreachableError,
    KeyRefusedError,
    RemoteTimeoutError,
    SshError,
)
from nextdeploy.remote.ssh import SshTransport
from support.hosts import Hosts, hosts_or_skip, nginx_in_front, running_hosts, skip_without_host_tools
from support.nshost import free_port, keygen, mounts_of, pids_in_namespace, wait_listening

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with hosts_or_skip(tmp_path_factory.mktemp("hosts"), count=3) as started:
        yield started


@pytest.fixture
def transport(hosts: Hosts) -> Iterator[SshTransport]:
    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as opened:
        yield opened


def one_line(error: SshError) -> str:
    """The error as the CLI prints it: must be one line, naming the host and the fix."""
    lines = format_error(error)
    assert len(lines) == 1 and error.host in lines[0] and "(fix: " in lines[0], lines
    assert error.exit_code == ExitCode.SSH
    return lines[0]


def test_a_command_runs_on_its_host_and_sees_only_its_own_files(hosts: Hosts, transport: SshTransport) -> None:
    marker = f"/srv/marker-{os.getpid()}"
    written = transport.run("web1", ["sh", "-c", 'cat > "$1"', "sh", marker], stdin=b"a secret\n")
    assert written.ok, written.error_text
    assert hosts["web1"].path(marker).read_bytes() == b"a secret\n"
    assert transport.run("web1", ["cat", marker]).stdout == b"a secret\n"
    assert transport.run("web2", ["test", "-e", marker]).exit_code == 1
    assert not hosts["web2"].path(marker).exists() and not Path(marker).exists()
    # Arguments reach the remote program as they were, through the remote shell.
    tricky = ["it's", "$HOME", "a b", "*", ";", "`x`", ""]
    echoed = transport.run("web2", ["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *tricky])
    assert echoed.text.strip() == '["it\'s", "$HOME", "a b", "*", ";", "`x`", ""]'
    # The remote command's exit code, even 255 with words that look like ssh's, is the command's own.
    assert transport.run("web3", ["sh", "-c", "echo oops >&2; exit 3"]).exit_code == 3
    own_255 = transport.run("web3", ["sh", "-c", "echo 'ssh: connect to host x port 1: Connection refused' >&2; "
                                                 "exit 255"])
    assert own_255.exit_code == 255 and b"Connection refused" in own_255.stderr
    with pytest.raises(RemoteTimeoutError) as raised:
        transport.run("web3", ["sleep", "3"], timeout=0.3)
    assert "`sleep 3` on web3 did not finish within 0.3 s" in one_line(raised.value)


def test_commands_to_a_host_share_one_connection(hosts: Hosts, transport: SshTransport) -> None:
    assert not transport.connected("web1")
    started = time.monotonic()
    first = transport.run("web1", ["sh", "-c", "echo $SSH_CONNECTION"])
    first_took = time.monotonic() - started
    assert transport.connected("web1") and not transport.connected("web2")
    started = time.monotonic()
    later = [transport.run("web1", ["sh", "-c", "echo $SSH_CONNECTION"]) for _ in range(5)]
    later_took = (time.monotonic() - started) / 5
    # SSH_CONNECTION is "client_address client_port server_address server_port": one TCP connection.
    assert {result.text for result in later} == {first.text}
    assert first.text.split()[2] == hosts["web1"].address
    print(f"first command {first_took * 1000:.0f} ms (connects), later ones {later_took * 1000:.0f} ms each")
    transport.close()
    assert not transport.connected("web1")
    assert not transport.control_dir.exists()


def test_a_stopped_sshd_makes_the_host_unreachable(hosts: Hosts, transport: SshTransport) -> None:
    hosts["web3"].stop_sshd()
    try:
        with pytest.raises(HostUnreachableError) as raised:
            transport.run("web3", ["true"])
        assert "web3" in one_line(raised.value) and "connection refused" in raised.value.message
    finally:
        hosts["web3"].start_sshd()
    transport.connect("web3")  # the same host, its sshd back: reachable again


def test_a_host_that_crashes_or_hangs_under_an_open_connection(hosts: Hosts) -> None:
    """The shared connection is up, then the host dies (connection reset) or hangs (nothing answers on a
    connection still open): the next command fails in bounded time, naming the host."""
    settings = SshSettings(config_file=hosts.ssh_config, connect_timeout=1, server_alive_interval=1,
                           server_alive_count_max=1)
    web2 = hosts["web2"]
    with SshTransport(settings) as transport:
        transport.connect("web2")
        web2.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(HostUnreachableError) as raised:
                transport.run("web2", ["true"], timeout=20)
            hung_for = time.monotonic() - started
        finally:
            web2.thaw()
        assert "web2" in one_line(raised.value) and hung_for < 10
        transport.connect("web2")
        web2.crash()
        try:
            with pytest.raises(HostUnreachableError) as raised:
                transport.run("web2", ["true"], timeout=20)
            assert "connection refused" in one_line(raised.value)
        finally:
            web2.start_sshd()
        assert transport.run("web2", ["true"]).ok
    print(f"a hung host is given up after {hung_for:.1f} s")


def test_a_refused_key(hosts: Hosts, tmp_path: Path) -> None:
    keygen(tmp_path / "other_key", "not authorized anywhere")
    config = hosts.write_ssh_config(tmp_path / "ssh_config", key=tmp_path / "other_key")
    with SshTransport(SshSettings(config_file=config)) as transport, pytest.raises(KeyRefusedError) as raised:
        transport.run("web1", ["true"])
    assert "Permission denied (publickey)" in one_line(raised.value)


def test_a_changed_or_unknown_host_key(hosts: Hosts, tmp_path: Path) -> None:
    swapped = tmp_path / "known_hosts_swapped"
    swapped.write_text(hosts.known_hosts_lines({"web2": hosts["web1"].host_key}))
    config = hosts.write_ssh_config(tmp_path / "ssh_config_swapped", known_hosts=swapped)
    with SshTransport(SshSettings(config_file=config)) as transport:
        with pytest.raises(HostKeyError) as raised:
            transport.run("web2", ["true"])
        assert "differs from the one pinned" in one_line(raised.value)
        transport.connect("web1")  # its own key is pinned right
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    config = hosts.write_ssh_config(tmp_path / "ssh_config_empty", known_hosts=empty)
    with SshTransport(SshSettings(config_file=config)) as transport, pytest.raises(HostKeyError) as raised:
        transport.run("web2", ["true"])
    assert "is not in known_hosts" in one_line(raised.value)
    assert empty.read_text() == ""  # never accepted, never added


def test_an_unknown_name_and_a_silent_port(hosts: Hosts) -> None:
    settings = SshSettings(config_file=hosts.ssh_config, connect_timeout=1)
    with SshTransport(settings) as transport:
        with pytest.raises(HostUnreachableError) as raised:
            transport.run("nowhere.invalid", ["true"])
        assert "cannot resolve the host name of nowhere.invalid" in one_line(raised.value)
        # A port that accepts connections but never says a word: the connect timeout applies.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            started = time.monotonic()
            with pytest.raises(HostUnreachableError) as raised:
                transport.run(f"root@127.0.0.1:{silent.getsockname()[1]}", ["true"])
            assert time.monotonic() - started < 10
        assert "timed out" in one_line(raised.value)


def test_rsync_twice_ships_only_the_delta(hosts: Hosts, transport: SshTransport, tmp_path: Path) -> None:
    tree = tmp_path / "release"
    (tree / "chunks").mkdir(parents=True)
    for index in range(40):
        (tree / "chunks" / f"{index}.js").write_bytes(os.urandom(20_000))
    (tree / "server.js").write_text("console.log('v1')\n")
    first = transport.rsync("web2", tree, "/srv/app/releases/r1")
    assert first.files_transferred == 41 and first.bytes_sent > 800_000
    (tree / "server.js").write_text("console.log('v2')\n")
    second = transport.rsync("web2", tree, "/srv/app/releases/r2", link_dest="/srv/app/releases/r1")
    print(f"bytes sent: first {first.bytes_sent}, second {second.bytes_sent}")
    assert second.files_transferred == 1 and second.bytes_sent < first.bytes_sent / 50
    release = hosts["web2"].path("/srv/app/releases/r2")
    assert (release / "server.js").read_text() == "console.log('v2')\n"
    assert (release / "chunks" / "7.js").read_bytes() == (tree / "chunks" / "7.js").read_bytes()
    assert (release / "chunks" / "7.js").stat().st_nlink == 2  # a hard link to r1's copy, on the host
    assert not hosts["web1"].path("/srv/app").exists()
    # A fresh build gives every file a new mtime: --checksum still finds them unchanged.
    for file in tree.rglob("*.js"):
        os.utime(file, (time.time() + 5, time.time() + 5))
    third = transport.rsync("web2", tree, "/srv/app/releases/r3", link_dest="/srv/app/releases/r2")
    assert third.literal_bytes == 0 and third.bytes_sent < first.bytes_sent / 50
    # A target that cannot be a dir on the host: a one-line error naming the host.
    hosts["web2"].path("/srv/a-file").write_text("")
    with pytest.raises(SshError) as raised:
        transport.rsync("web2", tree, "/srv/a-file/r1")
    assert "cannot create /srv/a-file/r1 on web2" in one_line(raised.value)


def test_nginx_in_front_and_nothing_left_behind(tmp_path: Path) -> None:
    """Servers started on the hosts over SSH answer through nginx; closing the hosts stops them all and
    leaves no process in a host's namespace and no mount."""
    skip_without_host_tools()
    with running_hosts(tmp_path / "hosts", count=2) as hosts:
        namespaces = [host.namespace for host in hosts.hosts]
        port = free_port(hosts.hosts[0].address)  # the same port on every host, as an app's would be
        with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport:
            for host in hosts.hosts:
                transport.run(host.name, ["sh", "-c", f"echo {host.name} > /srv/index.html"])
                transport.run(host.name, ["sh", "-c", f"setsid python3 -m http.server --bind {host.address} "
                                                      f"--directory /srv {port} </dev/null >/dev/null 2>&1 &"])
        for host in hosts.hosts:
            wait_listening(host.address, port)
        front = hosts.hosts[0].address.rsplit(".", 1)[0] + ".1"
        with nginx_in_front(tmp_path / "nginx", front, [f"{host.address}:{port}" for host in hosts.hosts]) as nginx:
            answers = [fetch(nginx.url + "/index.html") for _ in range(6)]
            assert sorted(answers) == ["web1"] * 3 + ["web2"] * 3  # round robin over both hosts
            assert all(line.startswith("200 ") for line in nginx.access_log())
        for host in hosts.hosts:
            # The host itself (the holder, its pid 1, sshd and the nsenter that started it), then the server.
            assert len(host.processes()) == 5 and len(set(host.processes()) - host.own_pids()) == 1
            assert len(mounts_of(host.dir)) == 4  # /srv, /root, /etc/ssh, /tmp
    for host, namespace in zip(hosts.hosts, namespaces, strict=True):
        assert pids_in_namespace(namespace) == []
        assert mounts_of(host.dir) == []


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode().strip())


def test_parallel_commands_to_many_hosts_share_one_connection_each(hosts: Hosts, transport: SshTransport) -> None:
    """Threads running on every host at once, as a fleet deploy will: each command answers from its own
    host's namespace, and the commands to one host share one connection even when they start together."""
    answers: list[tuple[str, str, str]] = []

    def ask(name: str) -> None:
        said = transport.run(name, ["sh", "-c", "readlink /proc/self/ns/mnt; echo $SSH_CONNECTION"]).text.split()
        answers.append((name, said[0], said[2]))  # the namespace, the client's port

    threads = [threading.Thread(target=ask, args=(name,)) for name in hosts.names for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 9
    for host in hosts.hosts:
        mine = {(namespace, port) for name, namespace, port in answers if name == host.name}
        assert len(mine) == 1 and next(iter(mine))[0] == host.namespace
