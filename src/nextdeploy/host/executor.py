"""Executors: the one place where host operations happen.

``LocalExecutor`` does them on this machine; ``DryRunExecutor`` prints them and changes nothing.
An SSH executor would implement the same ``apply``.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nextdeploy.core.errors import HostPathError, ToolMissingError
from nextdeploy.core.interrupts import STOP_SIGNALS
from nextdeploy.host.ports import Holder, Listener, listeners_on
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.plans.ops import (
    CopyFile,
    CopyTree,
    DeleteWorkers,
    MakeDirs,
    MoveTree,
    Op,
    PrivateFile,
    ReloadWorkers,
    Remove,
    Rename,
    Run,
    SpawnWorkers,
    StopProcesses,
    Symlink,
    WriteFile,
)
from nextdeploy.pm2 import rpc as pm2rpc

# How long a command's output is still read after it exited (what it left running may hold the pipe).
OUTPUT_DRAIN = 2.0
# How long a reload with ``until_serving`` waits on PM2's bus before it looks at its calls again.
SERVING_POLL = 0.05


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    timed_out: bool = False  # killed at its op's timeout (returncode 124, as timeout(1) has it)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Executor:
    """Carries out ops. Subclasses implement ``apply``."""

    dry_run = False

    def apply(self, op: Op) -> RunResult:
        raise NotImplementedError

    def apply_all(self, ops: Iterable[Op]) -> None:
        for op in ops:
            self.apply(op)

    def settle(self) -> list[str]:
        """Wait for what ops left running in the background (a reload's drain); returns their problems."""
        return []


class LocalExecutor(Executor):
    """Runs ops on this machine. ``echo`` shows the lines of a ``Run`` with an ``echo_prefix``."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._unsettled: list[Future[str | None]] = []
        self.echo = echo

    def settle(self) -> list[str]:
        unsettled, self._unsettled = self._unsettled, []
        return [problem for future in unsettled if (problem := future.result())]

    def apply(self, op: Op) -> RunResult:
        try:
            return self._apply(op)
        except PermissionError as exc:
            raise HostPathError(
                f"permission denied: {exc.filename or exc}",
                hint="run as the user that owns the deploy root, or fix the directory's permissions",
            ) from None

    def _apply(self, op: Op) -> RunResult:
        if isinstance(op, Run):
            return _run(op, self.echo)
        if isinstance(op, ReloadWorkers):
            result, unsettled = _reload_workers(op)
            self._unsettled += unsettled
            return result
        if isinstance(op, SpawnWorkers):
            return _calls_in_background(op.socket, "duplicateProcessId", [(pm_id,) for pm_id in op.like])
        if isinstance(op, DeleteWorkers):
            if not op.wait:
                return _calls_in_background(op.socket, "deleteProcessId", [(pm_id,) for pm_id in op.ids])
            return _delete_workers(op)
        if isinstance(op, WriteFile):
            _write_atomic(op.path, op.content, op.mode)
        elif isinstance(op, MakeDirs):
            op.path.mkdir(parents=True, exist_ok=True)
            if op.mode is not None:
                op.path.chmod(op.mode)
        elif isinstance(op, PrivateFile):
            open_private(op.path).close()
        elif isinstance(op, CopyTree):
            _copy_tree(op.src, op.dst, op.ignore, op.link_from)
        elif isinstance(op, MoveTree):
            _move_tree(op)
        elif isinstance(op, CopyFile):
            op.dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_replacing(op.src, op.dst)
        elif isinstance(op, Symlink):
            switch_symlink(op.link, op.target)
        elif isinstance(op, Rename):
            os.replace(op.src, op.dst)
        elif isinstance(op, Remove):
            remove_path(op.path)
        elif isinstance(op, StopProcesses):
            _stop_processes(op.pids, op.grace)
        else:  # pragma: no cover - the Op union is closed
            raise TypeError(f"unknown op {op!r}")
        return RunResult(0)


def _reload_workers(op: ReloadWorkers) -> tuple[RunResult, list[Future[str | None]]]:
    """Each reload is one RPC call that returns once the new worker is ready and the old one stopped.

    Returns the result and, with ``until_serving``, the calls still running (old workers draining)."""
    def reload(pm_id: int) -> str | None:
        try:
            pm2rpc.call(op.socket, "reloadProcessId", {"id": pm_id, "env": {}}, timeout=op.timeout)
        except pm2rpc.RpcUnavailable as exc:
            return f"worker {pm_id}: {exc}"
        return None

    # Subscribed before the first call, so no 'ready' can pass unseen. No bus: wait for the calls.
    events = _pm2_events(op.socket.with_name("pub.sock")) if op.until_serving else None
    try:
        pool = ThreadPoolExecutor(max_workers=max(1, op.at_once))
        calls = {pm_id: pool.submit(reload, pm_id) for pm_id in op.ids}
        pool.shutdown(wait=False)  # the threads end with their calls
        if events is not None:
            _wait_until_serving(calls, events)
    finally:
        if events is not None:
            events.close()
    if events is None or _failed(calls):
        futures_wait(calls.values())  # after a failure too: every call ends, the caller falls back to the CLI
    problems = [problem for call in calls.values() if call.done() and (problem := call.result())]
    if problems:
        return RunResult(1, stderr="; ".join(problems)), []
    return RunResult(0), [call for call in calls.values() if not call.done()]


def _calls_in_background(socket_path: Path, method: str, calls: list[tuple[Any, ...]]) -> RunResult:
    """Send each call to the daemon now; read the replies in daemon threads, which die with this process
    (the daemon carries out a call whether or not anyone waits for its reply)."""
    problems = []
    for args in calls:
        try:
            sock = pm2rpc.send(socket_path, method, *args)
        except pm2rpc.RpcUnavailable as exc:
            problems.append(f"{method}({', '.join(map(str, args))}): {exc}")
            continue
        sock.settimeout(None)
        threading.Thread(target=_read_and_close, args=(sock,), daemon=True).start()
    return RunResult(1, stderr="; ".join(problems)) if problems else RunResult(0)


def _read_and_close(sock: socket.socket) -> None:
    with sock:
        try:
            pm2rpc.receive_reply(sock)
        except pm2rpc.RpcUnavailable:
            pass  # whoever sent it watches the process list, not this reply


def _delete_workers(op: DeleteWorkers) -> RunResult:
    """Delete the workers at once, each on its own connection; wait for every reply (each worker stopped)."""
    def delete(pm_id: int) -> str | None:
        try:
            pm2rpc.call(op.socket, "deleteProcessId", pm_id, timeout=op.timeout)
        except pm2rpc.RpcUnavailable as exc:
            return f"worker {pm_id}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(op.ids))) as pool:
        problems = [problem for problem in pool.map(delete, op.ids) if problem]
    return RunResult(1, stderr="; ".join(problems)) if problems else RunResult(0)


def _pm2_events(path: Path) -> pm2rpc.EventStream | None:
    try:
        return pm2rpc.EventStream(path)
    except pm2rpc.RpcUnavailable:
        return None


def _failed(calls: dict[int, Future[str | None]]) -> bool:
    return any(call.done() and call.result() for call in calls.values())


def _wait_until_serving(calls: dict[int, Future[str | None]], events: pm2rpc.EventStream) -> None:
    """Until each call has ended or its new worker said 'ready' (it serves; PM2 now stops the old one)."""
    ready: set[int] = set()
    while not all(call.done() or pm_id in ready for pm_id, call in calls.items()):
        if _failed(calls):
            return
        try:
            event = events.next_event(timeout=SERVING_POLL)
        except pm2rpc.RpcUnavailable:
            return  # the bus went away: the caller waits for the calls themselves
        if event is not None and (pm_id := pm2_plan.readied_worker(*event)) is not None:
            ready.add(pm_id)


def _copy_tree(src: str | Path, dst: str | Path, ignore: tuple[str, ...] = (), link_from: Path | None = None) -> None:
    """``cp -a`` into ``dst`` (merging), symlinks kept, every file a new inode (see ``_copy_replacing``), but
    with ``link_from`` a hard link to the file at the same path there when it is the same."""
    copy: Callable[[str | Path, str | Path], None] = _copy_replacing
    if link_from is not None:
        earlier_root, dst_root = link_from, Path(dst)

        def copy(file_src: str | Path, file_dst: str | Path) -> None:
            if not _link_if_same(str(file_src), earlier_root / Path(file_dst).relative_to(dst_root), file_dst):
                _copy_replacing(file_src, file_dst)

    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(*ignore) if ignore else None,
                    dirs_exist_ok=True, copy_function=copy)


def _copy_replacing(src: str | Path, dst: str | Path) -> None:
    """copy2 into a new inode: a destination hard-linked from another release must not be written through."""
    if os.path.lexists(dst) and not os.path.isdir(dst):
        os.unlink(dst)
    shutil.copy2(src, dst, follow_symlinks=False)


def _move_tree(op: MoveTree) -> None:
    _move_entries(Path(op.src), op.dst, Path(), op.link_from)


def _move_entries(src: Path, dst: Path, relative: Path, link_from: Path | None) -> None:
    """Rename each entry of ``src`` into ``dst``. With ``link_from``: a directory that also exists there is
    rebuilt entry by entry instead, and a ``node_modules`` file identical to its counterpart there becomes
    a hard link to it; the build's copy stays behind in ``src``, deleted later with the build dir (in
    the background: freeing ~1,000 files costs more than linking them)."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(src):
        target = dst / entry.name
        inner = relative / entry.name
        earlier = link_from / inner if link_from is not None else None
        if earlier is not None and entry.is_dir(follow_symlinks=False) and earlier.is_dir():
            _move_entries(Path(entry.path), target, inner, link_from)
            continue
        if earlier is not None and "node_modules" in inner.parts and _link_if_same(entry.path, earlier, target):
            continue
        if not os.path.lexists(target):
            try:
                os.rename(entry.path, target)
                continue
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        if entry.is_dir(follow_symlinks=False):
            _copy_tree(entry.path, target)
        else:
            _copy_replacing(entry.path, target)


def _link_if_same(src: str, earlier: Path, target: str | Path) -> bool:
    """Make ``target`` a hard link to ``earlier`` if that has the same bytes and mode as ``src``. False when it
    differs or cannot be linked (another filesystem, the link limit): then the caller moves or copies."""
    if not _same_regular_file(src, earlier):
        return False
    try:
        if os.path.lexists(target):
            os.unlink(target)
        os.link(earlier, target)
    except OSError:
        return False
    return True


def _same_regular_file(src: str, earlier: Path) -> bool:
    try:
        a, b = os.lstat(src), os.lstat(earlier)
    except OSError:
        return False
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)) or a.st_size != b.st_size or a.st_mode != b.st_mode:
        return False
    return _same_content(src, earlier)


def _same_content(a: str | Path, b: str | Path, chunk: int = 1 << 20) -> bool:
    """Byte-for-byte equal (sizes already equal). 1 MiB reads: filecmp's 8 KiB loop cost ~0.1 s of a deploy's
    assembly on the example's ~1,100 dependency files."""
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            block = left.read(chunk)
            if block != right.read(chunk):
                return False
            if not block:
                return True


class DryRunExecutor(Executor):
    """Prints each op as the shell line it stands for; changes nothing."""

    dry_run = True

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.applied: list[Op] = []

    def apply(self, op: Op) -> RunResult:
        self.applied.append(op)
        self.echo(op.render())
        return RunResult(0)


def open_private(path: Path, append: bool = True) -> BinaryIO:
    """Open a log for writing, mode 0600 (also when it existed), in a directory created 0700: what a build or
    a server prints may hold secrets (env values, tokens in an error)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC), 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if append else "wb")


def _run(op: Run, echo: Callable[[str], None] | None = None) -> RunResult:
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


def _write_atomic(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def switch_symlink(link: Path, target: str) -> None:
    """Atomically point ``link`` at ``target`` (temp symlink + rename), refusing to replace a real dir."""
    if link.exists() and not link.is_symlink():
        raise HostPathError(
            f"{link} is a real {'directory' if link.is_dir() else 'file'}, not a symlink",
            hint=f"move it away (e.g. mv {link} {link}.old) so nextdeploy can manage it as a symlink",
        )
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Delete a file, symlink or tree; no error if it is already gone."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=False)


def remove_in_background(path: Path) -> threading.Thread:
    """Start deleting ``path`` in a thread; errors are ignored (a later run sweeps what is left)."""
    thread = threading.Thread(target=shutil.rmtree, args=(path,), kwargs={"ignore_errors": True},
                              name=f"remove {path.name}", daemon=True)
    thread.start()
    return thread


def _other_pids() -> Iterator[int]:
    """Every pid in /proc but our own."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            yield int(proc.name)


def live_processes() -> Iterator[tuple[int, str, str]]:
    """(pid, cwd, command line) of every process we may inspect, except our own."""
    for pid in _other_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        cmdline = _command_line(pid)
        if cmdline is not None:
            yield pid, cwd, cmdline


def _stat_after_comm(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); [] if it is gone.
    The name may hold spaces and parentheses, what follows its last ')' not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None if it is gone."""
    fields = _stat_after_comm(pid)
    return int(fields[1]) if len(fields) > 1 else None


def _running(pid: int) -> bool:
    """Still there, and not a zombie (dead, waiting for its parent to collect its exit status)."""
    state = _stat_after_comm(pid)[:1]
    return bool(state) and state != ["Z"]


def _stop_processes(pids: tuple[int, ...], grace: float) -> None:
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
        left = {pid for pid in left if _running(pid)}
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
    for pid in _other_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in b"\0" + environ + b"\0" and _running(pid):
            found.append(pid)
    return found


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


def port_holders(port: int, likely: Iterable[int] = ()) -> list[Holder]:
    """Who listens on ``port``: each listening socket's process, looked for among ``likely`` pids first."""
    listeners: list[Listener] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            listeners += listeners_on(Path(table).read_text(), port)
        except OSError:
            continue
    wanted = {listener.inode: listener for listener in listeners}
    holders: list[Holder] = []
    # Lazily: usually a likely pid (the live app's PM2 daemon) holds it, and /proc is never walked.
    likely = list(likely)
    for pid in itertools.chain(likely, (pid for pid in _other_pids() if pid not in likely)):
        if not wanted:
            break
        for inode in _socket_inodes(pid) & wanted.keys():
            holders.append(Holder(pid, _command_line(pid), wanted.pop(inode).uid))
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


def _command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
