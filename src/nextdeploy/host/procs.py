"""Processes on the host: running a command (its own session, niceness, held stop signals, timeouts,
output to a private log), stopping processes, and reading ``/proc`` (who works where, who carries a
marker, a process's parent, state and age)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.errors import HostPathError, ToolMissingError
from nextdeploy.core.interrupts import STOP_SIGNALS
from nextdeploy.host.files import open_private
from nextdeploy.plans.ops import Run

# How long a command's output is still read after it exited (what it left running may hold the pipe).
OUTPUT_DRAIN = 2.0


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    timed_out: bool = False  # killed at its op's timeout (returncode 124, as timeout(1) has it)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_command(op: Run, echo: Callable[[str], None] | None = None) -> RunResult:
    env = dict(op.env) if op.clean_env else {**os.environ, **op.env}
    if op.path:
        env["PATH"] = os.pathsep.join([*op.path, *([env["PATH"]] if env.get("PATH") else [])])
    try:
        if op.log_file is not None:
            with open_private(op.log_file) as log:
                log.write(f"$ {op.render()}\n".encode())
                log.flush()
                if op.echo_prefix is not None:
                    prefix = op.echo_prefix
                    tee = _tee(log, (lambda line: echo(prefix + line)) if echo else None)
                    stdout, stderr, code = _run_to_end(op, env, subprocess.PIPE, subprocess.STDOUT, text=False,
                                                       on_output=tee)
                else:
                    stdout, stderr, code = _run_to_end(op, env, log, subprocess.STDOUT, text=False)
        else:
            stdout, stderr, code = _run_to_end(op, env, subprocess.PIPE, subprocess.PIPE, text=True)
    except FileNotFoundError:
        if op.cwd is not None and not op.cwd.is_dir():
            raise HostPathError(f"working directory {op.cwd} does not exist") from None
        raise ToolMissingError(
            f"`{op.argv[0]}` was not found on PATH",
            hint=f"install {op.argv[0]} or put it on PATH",
        ) from None
    except subprocess.TimeoutExpired:
        return RunResult(124, "", f"timed out after {op.timeout:g} s: {op.render()}", timed_out=True)
    return RunResult(code, stdout or "", stderr or "")


def _tee(log: Any, echo: Callable[[str], None] | None) -> Callable[[Any], None]:
    """Reads a child's output line by line into ``log`` (bytes, as written) and ``echo`` (text, no newline)."""
    def pump(pipe: Any) -> None:
        for raw in iter(pipe.readline, b""):
            log.write(raw)
            log.flush()
            if echo is not None:
                echo(raw.decode(errors="replace").rstrip("\r\n"))
    return pump


def _run_to_end(op: Run, env: dict[str, str], stdout: Any, stderr: Any, text: bool,
                on_output: Callable[[Any], None] | None = None) -> tuple[str | None, str | None, int]:
    """Run a command and wait for it; on a timeout or an interrupt (Ctrl-C), kill it with all it started.

    A niced command, or one with a timeout, runs in a session of its own (see _lower_priority), out of
    reach of the terminal's Ctrl-C and hang-up. The signals that stop a run (``interrupts.STOP_SIGNALS``)
    are held from before its start until the wait that would kill it is in place: one in between is
    raised then, not lost with the build left running.
    """
    # A timeout needs the whole tree in one group to kill (a build's package manager starts `next build`).
    own_session = bool(op.nice) or op.timeout is not None
    holding = own_session and threading.current_thread() is threading.main_thread()
    if holding:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    process: subprocess.Popen[Any] | None = None
    try:
        process = subprocess.Popen(
            op.argv, cwd=op.cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=text,
            start_new_session=own_session, preexec_fn=_lower_priority(op.nice, unblock_signals=holding),
        )
        if holding:
            holding = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a held signal is raised here
        if on_output is None:
            out, err = process.communicate(timeout=op.timeout)
            return out, err, process.returncode
        reader = threading.Thread(target=on_output, args=(process.stdout,), daemon=True)
        reader.start()
        process.wait(timeout=op.timeout)
        reader.join(OUTPUT_DRAIN)  # a daemon it left behind may hold the pipe open: do not wait for it
        return None, None, process.returncode
    except BaseException:
        if process is not None:
            if own_session:
                # Its own process group: a build's package manager, `next build` and its workers go together.
                kill_process_group(process.pid)
            process.kill()
            if on_output is None:
                process.communicate()
            else:
                process.wait()
        raise
    finally:
        if holding:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def kill_process_group(pgid: int) -> None:
    """SIGKILL a process started in a session of its own, with everything it started; gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _lower_priority(niceness: int, unblock_signals: bool = False) -> Callable[[], None] | None:
    """A preexec_fn that lowers the child's CPU priority (no privileges needed for that).

    With autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in Debian's
    and Ubuntu's kernels) the CPU is shared between sessions first and niceness counts only inside a
    session: a niced build in the deploy's session still got as much CPU as the PM2 daemon's whole
    session. So the child runs in a session of its own (``start_new_session``) whose autogroup gets the
    same niceness. ``unblock_signals``: the child inherits the parent's held stop signals; it must not
    keep them.
    """
    if not niceness and not unblock_signals:
        return None

    def lower() -> None:
        if unblock_signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if not niceness:
            return
        os.nice(niceness)
        try:
            with open("/proc/self/autogroup", "w", encoding="ascii") as autogroup:
                autogroup.write(str(niceness))
        except OSError:
            pass  # no autogroup scheduling (or not Linux): the niceness alone does it

    return lower


def other_pids() -> Iterator[int]:
    """Every pid in /proc but our own."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            yield int(proc.name)


def live_processes() -> Iterator[tuple[int, str, str]]:
    """(pid, cwd, command line) of every process we may inspect, except our own."""
    for pid in other_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        cmdline = command_line(pid)
        if cmdline is not None:
            yield pid, cwd, cmdline


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from field 3 on (state, ppid, ...; field
    ``n`` is at index ``n - 3``); [] if it is gone. The name may hold spaces and parentheses, what follows
    its last ')' not. The one reader of that file."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None if it is gone."""
    fields = stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else None


def running(pid: int) -> bool:
    """Still there, and not a zombie (dead, waiting for its parent to collect its exit status)."""
    state = stat_fields(pid)[:1]
    return bool(state) and state != ["Z"]


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` is there (a zombie too)."""
    return pid > 0 and Path(f"/proc/{pid}").exists()


def process_executable(pid: int) -> str | None:
    """The binary ``pid`` runs; one replaced in place since it started is named by its path all the same."""
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (its start time, field 22, is in clock ticks since boot)."""
    fields = stat_fields(pid) if pid > 0 else []
    try:
        start_ticks = int(fields[19])
    except (ValueError, IndexError):
        return None
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def process_cwd(pid: int) -> str | None:
    if pid <= 0:
        return None
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def stop_processes(pids: tuple[int, ...], grace: float) -> None:
    """SIGINT each, wait until they are gone or ``grace`` s passed, SIGKILL the rest. Gone is fine."""
    left = set()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
            left.add(pid)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if running(pid)}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def processes_under(directory: Path) -> list[int]:
    """Pids of the processes working inside ``directory``."""
    prefix = str(directory.resolve()) + os.sep
    return [pid for pid, cwd, _ in live_processes() if (cwd + os.sep).startswith(prefix)]


def processes_marked(name: str, value: str) -> list[int]:
    """Pids of the processes started with ``name=value`` in their environment (and whatever they started:
    children inherit it), wherever they work now. Other users' processes cannot be read: never theirs."""
    marker = f"\0{name}={value}\0".encode()
    found = []
    ours = _mount_namespace("self")
    for pid in other_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        # A path names a dir within one mount namespace: a process of another (a container, a fleet's test
        # host) marked with the same path was started for another dir.
        if marker in b"\0" + environ + b"\0" and running(pid) and _mount_namespace(str(pid)) in (ours, None):
            found.append(pid)
    return found


def _mount_namespace(pid: str) -> str | None:
    """The mount namespace of ``pid`` ("self": this process), None when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
