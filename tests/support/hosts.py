"""The test hosts of a fleet (each a host of its own: tests/support/nshost.py), how the controller reaches
them, and the nginx in front of them.

The controller reaches the hosts as ``web1``..``webN`` through a generated ssh config: a generated key,
known_hosts pinned with the hosts' generated host keys, ``StrictHostKeyChecking yes``, no agent.
``nginx_in_front`` runs a real nginx balancing across the hosts, retries off so no failure is hidden.

Needs root (mounts), ``unshare``/``nsenter`` (util-linux), ``sshd``, ``ssh``, ``ssh-keygen``, ``rsync``
and ``nginx`` (scripts/test installs the missing ones).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.nshost import SSHD, Host, free_port, keygen, wait_listening


def missing_host_tools() -> list[str]:
    """The programs test hosts need that this machine lacks, or ["root"] when not running as root."""
    missing = [] if os.geteuid() == 0 else ["root"]
    for tool in ("unshare", "nsenter", "ssh", "ssh-keygen", "rsync", "nginx"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing.append(tool)
    if not Path(SSHD).exists():
        missing.append("sshd")
    return missing


@dataclass
class Hosts:
    """The test hosts and the controller's ssh config, key and known_hosts to reach them."""

    dir: Path
    hosts: list[Host] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts]

    def __getitem__(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    @property
    def client_dir(self) -> Path:
        return self.dir / "controller"

    @property
    def key(self) -> Path:
        return self.client_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.client_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.client_dir / "ssh_config"

    def known_hosts_lines(self, keys: dict[str, str] | None = None) -> str:
        """known_hosts for the hosts, each pinned with its own host key unless ``keys`` (name: public line)
        pins another."""
        lines = []
        for host in self.hosts:
            key = (keys or {}).get(host.name, host.host_key)
            key_type, key_data = key.split()[:2]
            lines.append(f"[{host.address}]:{host.ssh_port} {key_type} {key_data}\n")
        return "".join(lines)

    def write_ssh_config(self, path: Path, *, key: Path | None = None, known_hosts: Path | None = None) -> Path:
        """An ssh config with the aliases web1..webN: the generated key and known_hosts unless others are given
        (the failure tests use a wrong key or a known_hosts with another key)."""
        aliases = "".join(f"Host {host.name}\n  HostName {host.address}\n  Port {host.ssh_port}\n"
                          for host in self.hosts)
        path.write_text(
            f"{aliases}Host *\n  User root\n  IdentityFile {key or self.key}\n  IdentitiesOnly yes\n"
            f"  IdentityAgent none\n  UserKnownHostsFile {known_hosts or self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n"
        )
        return path

    def ssh(self, name: str, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host with the plain ssh client (tests' own look at a host)."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", name, command],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=check)

    def close(self) -> None:
        for host in self.hosts:
            host.close()


def address_block() -> str:
    """The first three octets of a loopback /24 for one set of hosts: 127.X.Y, random so that two test
    runs at once (two worktrees, two CI jobs on one machine) do not share addresses."""
    return f"127.{random.randint(2, 254)}.{random.randint(0, 255)}"


@contextmanager
def running_hosts(base: Path, count: int = 3) -> Iterator[Hosts]:
    """``count`` test hosts web1..webN (127.X.Y.2, .3, ...), stopped at the end with all they ran."""
    block = address_block()
    hosts = Hosts(base)
    hosts.client_dir.mkdir(parents=True, mode=0o700)
    public_key = keygen(hosts.key, "controller")
    try:
        for index in range(count):
            address = f"{block}.{index + 2}"
            host = Host(f"web{index + 1}", address, free_port(address), base / f"web{index + 1}")
            hosts.hosts.append(host)
            host.start(public_key)
        hosts.known_hosts.write_text(hosts.known_hosts_lines())
        hosts.write_ssh_config(hosts.ssh_config)
        yield hosts
    finally:
        hosts.close()


def skip_without_host_tools() -> None:
    """Skip the test (saying what is missing) on a machine that cannot run test hosts."""
    if missing := missing_host_tools():
        pytest.skip(f"test hosts need {', '.join(missing)} (scripts/test installs them)")


@contextmanager
def hosts_or_skip(base: Path, count: int = 3) -> Iterator[Hosts]:
    """``running_hosts``, or the test skipped (saying what is missing) on a machine that cannot run them."""
    skip_without_host_tools()
    with running_hosts(base, count) as started:
        yield started


def nginx_front(listen: str, upstreams: Sequence[str]) -> str:
    """The ``map``, ``upstream`` and ``server`` blocks of the load balancer in front of a fleet, as docs/fleet.md
    shows them (tests/unit/test_fleet_docs.py compares the two): keep-alive to the hosts, closed by nginx before
    the app's own keep-alive timeout (Node's default, 5 s) so nginx never reuses a connection the app is closing;
    retries off (``proxy_next_upstream off``: a failed request is counted, not retried on another host) and no
    host taken out of the rotation after a failure (``max_fails=0``: every later request to it counts too); no
    response buffering (streaming works); ``/_next/static`` 200s cacheable as immutable, any other answer with
    the app's own Cache-Control (a 404 for a chunk a host lacks must not be kept for a year)."""
    servers = "".join(f"  server {upstream} max_fails=0;\n" for upstream in upstreams)
    proxy = ("    proxy_pass http://app;\n    proxy_http_version 1.1;\n"
             '    proxy_set_header Connection "";\n    proxy_set_header Host $host;\n'
             "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
             "    proxy_set_header X-Forwarded-Proto $scheme;\n"
             "    proxy_next_upstream off;\n    proxy_buffering off;\n")
    return (
        "map $upstream_status $static_cache_control {\n"
        '  200 "public, max-age=31536000, immutable";\n  default $upstream_http_cache_control;\n}\n'
        f"upstream app {{\n{servers}  keepalive 32;\n  keepalive_timeout 4s;\n}}\n"
        f"server {{\n  listen {listen};\n"
        f"  location /_next/static/ {{\n{proxy}"
        "    proxy_hide_header Cache-Control;\n"
        "    add_header Cache-Control $static_cache_control always;\n  }\n"
        f"  location / {{\n{proxy}  }}\n}}\n"
    )


def nginx_conf(prefix: Path, listen: str, upstreams: Sequence[str], front: str | None = None) -> str:
    """A whole nginx config around ``front`` (default: ``nginx_front(listen, upstreams)``), all its files under
    ``prefix``; its access log says which upstream served each request."""
    temp_paths = "".join(f"  {kind}_temp_path {prefix}/temp/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    blocks = "".join(f"  {line}\n" if line else "\n"
                     for line in (front or nginx_front(listen, upstreams)).splitlines())
    return (
        f"user root;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "  log_format upstreams '$status $upstream_addr $request';\n"
        f"  access_log {prefix}/access.log upstreams;\n{temp_paths}{blocks}"
        "}\n"
    )


@dataclass
class Nginx:
    prefix: Path
    address: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def access_log(self) -> list[str]:
        """The requests nginx served so far: ``status upstream_address request`` a line."""
        log = self.prefix / "access.log"
        return log.read_text().splitlines() if log.exists() else []


@contextmanager
def nginx_in_front(prefix: Path, address: str, upstreams: Sequence[str]) -> Iterator[Nginx]:
    """A real nginx listening on ``address`` (a free port) in front of ``upstreams``; stopped at the end."""
    port = free_port(address)
    (prefix / "temp").mkdir(parents=True)
    config = prefix / "nginx.conf"
    config.write_text(nginx_conf(prefix, f"{address}:{port}", upstreams))
    with ExitStack() as stack, (prefix / "stderr.log").open("ab") as stderr:
        process = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                   start_new_session=True)
        stack.callback(_stop_process_group, process)
        try:
            wait_listening(address, port)
        except TimeoutError:
            raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text(errors='replace')}") from None
        yield Nginx(prefix, address, port, process)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """nginx's master and its workers, by the group the master leads."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()
