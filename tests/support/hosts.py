"""Test hosts for the fleet: real OpenSSH servers on this machine, each a host of its own.

A host is a mount namespace and a PID namespace (``unshare --mount --pid --fork --mount-proc``) with its
own ``/srv``, ``/root``, ``/tmp`` and ``/etc/ssh`` (bind mounts of per-host temp dirs) and its own ``/proc``,
held open by its pid 1 (a small loop that reaps orphans, as an init does: a killed server leaves no zombie),
and an ``sshd`` started inside both (``nsenter --mount --pid``) listening on the host's own loopback address
(127.X.Y.2, .3, ...); the network is the controller's. So the same path is a different directory on each host,
nothing of the controller's ``/srv``, ``/root`` or ``/tmp`` is visible there, a host sees only its own
processes (as separate servers do: one host's recovery cannot find another's preflight under the same root),
and every process started over SSH (a PM2 daemon too) stays in those namespaces, which is how ``Host.close``
finds and stops them: killing the pid 1 kills the rest. The mounts exist only inside the namespace: once its
last process is gone they are gone too. Pids here (``Host.processes``, ``Fleet.leftovers``) are as this
machine sees them, not as the host does.

The controller reaches the hosts as ``web1``..``webN`` through a generated ssh config: a generated key,
known_hosts pinned with the hosts' generated host keys, ``StrictHostKeyChecking yes``, no agent.
``nginx_in_front`` runs a real nginx balancing across the hosts, retries off so no failure is hidden.

Needs root (mounts), ``unshare``/``nsenter`` (util-linux), ``sshd``, ``ssh``, ``ssh-keygen``, ``rsync``
and ``nginx`` (scripts/test installs the missing ones).
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.processes import gone_soon

SSHD = "/usr/sbin/sshd"
# A host's pid 1: reaps every child and orphan as it exits (SIGCHLD blocked and waited for, so none is missed);
# SIGTERM ends it, and with it every process of the host (``Host.close``).
REAPER = (
    "import os, signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})\n"
    "print('ready', flush=True)\n"
    "signo = signal.SIGCHLD\n"
    "while signo == signal.SIGCHLD:\n"
    "    try:\n"
    "        while os.waitpid(-1, os.WNOHANG)[0]:\n"
    "            pass\n"
    "    except ChildProcessError:\n"
    "        pass\n"
    "    signo = signal.sigwaitinfo({signal.SIGCHLD, signal.SIGTERM}).si_signo\n"
)
# The host's own copies of these paths; /tmp last, since the per-host dirs live under the controller's /tmp.
HOST_MOUNTS = ("/srv", "/root", "/etc/ssh", "/tmp")


def missing_host_tools() -> list[str]:
    """The programs test hosts need that this machine lacks, or ["root"] when not running as root."""
    missing = [] if os.geteuid() == 0 else ["root"]
    for tool in ("unshare", "nsenter", "ssh", "ssh-keygen", "rsync", "nginx"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing.append(tool)
    if not Path(SSHD).exists():
        missing.append("sshd")
    return missing


def mount_namespace(pid: int) -> str | None:
    """The mount namespace of a process (``mnt:[4026532174]``), or None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def pids_in_namespace(namespace: str) -> list[int]:
    """Every process whose mount namespace is ``namespace``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and mount_namespace(int(entry)) == namespace:
            found.append(int(entry))
    return found


def mounts_of(host_dir: Path) -> list[str]:
    """Every mount, in any process's view, of a dir under ``host_dir`` (a mount's root shows in mountinfo
    relative to its file system, so the dir's last four components are what is looked for)."""
    fragment = "/" + "/".join(host_dir.parts[-4:]) + "/"
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.update(line for line in Path(f"/proc/{entry}/mountinfo").read_text().splitlines()
                             if fragment in line)
            except OSError:
                pass  # gone meanwhile
    return sorted(found)


def free_port(address: str) -> int:
    """A TCP port nothing listens on at ``address`` right now."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def wait_listening(address: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on ``address:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {address}:{port} after {timeout} s") from None
            time.sleep(0.02)


def keygen(path: Path, comment: str) -> str:
    """A new passphrase-less ed25519 key at ``path``; returns its public line (``ssh-ed25519 AAAA... comment``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class Host:
    """One test host: a mount namespace, its sshd, and the per-host dirs behind its paths."""

    name: str
    address: str
    ssh_port: int
    dir: Path  # on the controller: srv/, root/, etc-ssh/, tmp/ and the sshd log
    host_key: str = ""  # the public line of its host key
    holder: subprocess.Popen[bytes] | None = None  # the ``unshare`` that made the namespaces, waiting for init
    init: int = 0  # the host's pid 1, by its pid here
    sshd: subprocess.Popen[bytes] | None = None  # the ``nsenter`` that started sshd, waiting for it
    sshd_pid: int = 0  # sshd itself
    namespace: str = ""

    def path(self, host_path: str) -> Path:
        """Where a path of this host (under one of its own mounts) lives on the controller."""
        for mount in HOST_MOUNTS:
            if host_path == mount or host_path.startswith(mount + "/"):
                return self.dir / mount.strip("/").replace("/", "-") / host_path[len(mount):].lstrip("/")
        raise ValueError(f"{host_path} is not under one of the host's own mounts {HOST_MOUNTS}")

    def start(self, authorized_key: str) -> None:
        """Create the host's dirs and keys, its namespace, then its sshd."""
        for mount in HOST_MOUNTS:
            self.path(mount).mkdir(parents=True)
        self.path("/root").chmod(0o700)
        self.path("/tmp").chmod(0o1777)
        self.path("/root/.ssh").mkdir(mode=0o700)
        authorized = self.path("/root/.ssh/authorized_keys")
        authorized.write_text(authorized_key + "\n")
        authorized.chmod(0o600)
        self.host_key = keygen(self.path("/etc/ssh/ssh_host_ed25519_key"), f"root@{self.name}")
        self.path("/etc/ssh/sshd_config").write_text(
            f"ListenAddress {self.address}:{self.ssh_port}\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "PidFile none\nUsePAM no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "StrictModes yes\nPrintMotd no\nMaxSessions 64\nMaxStartups 64:30:128\nLogLevel VERBOSE\n"
            "Subsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        binds = " && ".join(f"mount --bind {shlex.quote(str(self.path(mount)))} {mount}" for mount in HOST_MOUNTS)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--", "sh", "-c",
             f"{binds} && exec python3 -c {shlex.quote(REAPER)}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd="/",
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline() != b"ready\n":
            raise RuntimeError(f"could not set up the namespaces of {self.name} (exit {self.holder.wait()})")
        self.holder.stdout.close()
        self.init = only_child(self.holder.pid)
        namespace = mount_namespace(self.holder.pid)
        assert namespace and namespace != mount_namespace(os.getpid())
        assert os.readlink(f"/proc/{self.init}/ns/pid") != os.readlink("/proc/self/ns/pid")
        self.namespace = namespace
        self.start_sshd()

    def start_sshd(self) -> None:
        """Start (or restart) the host's sshd inside its namespace, and wait until it accepts connections."""
        assert self.holder is not None and self.sshd is None
        with (self.dir / "sshd.log").open("ab") as log:
            self.sshd = subprocess.Popen(
                [*self.inside(), SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
            )
        self.sshd_pid = only_child(self.sshd.pid)  # nsenter forks to enter the PID namespace
        try:
            wait_listening(self.address, self.ssh_port)
        except TimeoutError:
            raise RuntimeError(f"sshd of {self.name} did not start: {self.sshd_log()}") from None

    def stop_sshd(self) -> None:
        """Stop the host's sshd (the host goes unreachable); processes started over SSH keep running."""
        if self.sshd is not None:
            _signal(self.sshd_pid, signal.SIGTERM)  # nsenter passes on no signal: sshd's exit ends it
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                _signal(self.sshd_pid, signal.SIGKILL)
                self.sshd.wait()
            self.sshd, self.sshd_pid = None, 0

    def crash(self) -> None:
        """Kill every process on the host, as a power cut would (its files stay; ``start_sshd`` boots it)."""
        self._signal_all(signal.SIGKILL)
        if self.sshd is not None:
            self.sshd.wait()
            self.sshd, self.sshd_pid = None, 0

    def freeze(self) -> None:
        """Stop every process on the host: its TCP connections stay open but nothing answers (a hung host)."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def inside(self) -> list[str]:
        """The argv prefix that runs a command on the host without ssh: in its mount and PID namespaces (its
        ``/proc`` is the host's own: ``mount`` and ``umount`` read ``/proc/self`` there)."""
        return ["nsenter", f"--mount=/proc/{self.init}/ns/mnt", f"--pid=/proc/{self.init}/ns/pid", "--"]

    def own_pids(self) -> set[int]:
        """The processes that make the host rather than run on it: its holder, pid 1, sshd and their nsenter."""
        return {pid for pid in (self.holder.pid if self.holder else 0, self.init,
                                self.sshd.pid if self.sshd else 0, self.sshd_pid) if pid}

    def _signal_all(self, signal_number: int) -> None:
        """Send a signal to every process in the namespace but its holder and pid 1."""
        for pid in self.processes():
            if self.holder is None or pid not in (self.holder.pid, self.init):
                _signal(pid, signal_number)

    def sshd_log(self) -> str:
        log = self.dir / "sshd.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def processes(self) -> list[int]:
        """Every process living in this host's namespace (its holder and sshd included)."""
        return pids_in_namespace(self.namespace) if self.namespace else []

    def close(self) -> None:
        """Stop everything that runs on the host: its sshd first (no new sessions), then its pid 1 (the kernel
        kills every other process of its PID namespace, then the holder exits), then anything left in its
        mount namespace (a ``nsenter --mount`` of a test), so the namespaces and their mounts go away."""
        self.stop_sshd()
        if not self.namespace:
            return
        if self.init:
            _signal(self.init, signal.SIGTERM)  # it exits (SIGKILLed, unshare would complain as it passes that on)
        if self.holder is not None:
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                _signal(self.init, signal.SIGKILL)
                self.holder.wait()
        for _ in range(50):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            for pid in pids:
                gone_soon(pid, 2.0)


def only_child(pid: int, timeout: float = 10.0) -> int:
    """The one child ``pid`` has forked (waited for), by its pid here."""
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} forked no child in {timeout} s")
        time.sleep(0.01)


def _signal(pid: int, signal_number: int) -> None:
    try:
        os.kill(pid, signal_number)
    except ProcessLookupError:
        pass


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
