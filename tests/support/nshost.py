"""A test host: a real OpenSSH server on this machine, in namespaces of its own (the fleet's hosts are
several: tests/support/hosts.py).

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
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
