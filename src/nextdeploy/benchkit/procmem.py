"""Peak memory (and CPU) of groups of processes, sampled from /proc (Linux) in a thread: the fleet bench's figures.

Every ``interval`` s the sampler reads every process once (its parent, mount namespace, command line and
RSS) and hands the table to ``group``, which says for each process which subject it belongs to (the
controller, a host) and which kind it is (``nextdeploy``, ``build``, ``pm2``, ...), or None. For each
subject it keeps:

- the peak of the subject's total RSS (every process of it at one sample, summed),
- per kind, the peak of that kind's RSS summed at one sample, and the largest single process seen,
- per kind, the CPU its processes used while sampled (from the first sample for those already running),
- a few command lines per kind, so that a reader can check what was counted where.

RSS counts a shared page in every process that maps it, so a sum over processes over-counts shared
libraries a little; the largest single process is exact. A process that lives less than ``interval`` s
between two samples can be missed: the figures are a lower bound of the true peaks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
EXAMPLES = 4  # command lines kept per kind


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    namespace: str  # mount namespace, e.g. mnt:[4026531841]
    command: str  # command line, NULs as spaces ("" for a kernel thread or a zombie)
    rss: int  # bytes
    cpu: float = 0.0  # seconds of CPU used so far (user + system)


def read_proc(pid: int, proc: Path = Path("/proc")) -> Proc | None:
    """One process as /proc shows it now, or None once it is gone (or a zombie: no memory left)."""
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        if state in ("Z", "X"):
            return None
        rss = int((base / "statm").read_text().split()[1]) * PAGE
        command = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        namespace = os.readlink(base / "ns" / "mnt")
    except (OSError, IndexError, ValueError):
        return None
    return Proc(pid, ppid, namespace, command, rss, cpu)


def process_table(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """Every process now, by pid."""
    table = {}
    for entry in os.listdir(proc):
        if entry.isdigit() and (found := read_proc(int(entry), proc)) is not None:
            table[found.pid] = found
    return table


def descendants(table: dict[int, Proc], root: int) -> set[int]:
    """``root`` and every process below it in ``table`` (by parent pid)."""
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


# What a sample's ``group`` function returns: pid -> (subject, kind), for the processes to count.
Grouping = dict[int, tuple[str, str]]


@dataclass
class KindPeak:
    peak_sum: int = 0  # bytes: the kind's processes summed, at the sample where that was highest
    peak_single: int = 0  # bytes: the largest one process of the kind
    peak_single_command: str = ""
    most_processes: int = 0  # processes of this kind at one sample, at most
    examples: list[str] = field(default_factory=list)
    cpu_from: dict[int, float] = field(default_factory=dict)  # pid -> its CPU seconds when first seen (0: born since)
    cpu_last: dict[int, float] = field(default_factory=dict)  # pid -> its CPU seconds when last seen

    @property
    def cpu_seconds(self) -> float:
        """CPU the kind's processes used while sampled (up to each one's last sample)."""
        return sum(self.cpu_last[pid] - self.cpu_from[pid] for pid in self.cpu_last)

    def to_json(self) -> dict[str, Any]:
        return {"peak_sum_bytes": self.peak_sum, "peak_single_bytes": self.peak_single,
                "peak_single_command": self.peak_single_command[:200], "most_processes": self.most_processes,
                "cpu_seconds": round(self.cpu_seconds, 2), "examples": self.examples}


@dataclass
class SubjectPeak:
    peak_total: int = 0  # bytes: every process of the subject summed, at the sample where that was highest
    kinds: dict[str, KindPeak] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"peak_total_bytes": self.peak_total,
                "cpu_seconds": round(sum(peak.cpu_seconds for peak in self.kinds.values()), 2),
                "kinds": {kind: peak.to_json() for kind, peak in sorted(self.kinds.items())}}


def add_sample(peaks: dict[str, SubjectPeak], table: dict[int, Proc], grouping: Grouping,
               running_before: frozenset[int] | set[int] = frozenset()) -> None:
    """Fold one sample (``table`` grouped by ``grouping``) into ``peaks``. A process of ``running_before`` (the
    first sample's) counts the CPU it uses from its first sample on; any other, all of its CPU."""
    totals: dict[str, int] = {}
    by_kind: dict[tuple[str, str], list[Proc]] = {}
    for pid, (subject, kind) in grouping.items():
        if (process := table.get(pid)) is not None:
            totals[subject] = totals.get(subject, 0) + process.rss
            by_kind.setdefault((subject, kind), []).append(process)
    for subject, total in totals.items():
        peak = peaks.setdefault(subject, SubjectPeak())
        peak.peak_total = max(peak.peak_total, total)
    for (subject, kind), processes in by_kind.items():
        kind_peak = peaks[subject].kinds.setdefault(kind, KindPeak())
        kind_peak.peak_sum = max(kind_peak.peak_sum, sum(process.rss for process in processes))
        kind_peak.most_processes = max(kind_peak.most_processes, len(processes))
        largest = max(processes, key=lambda process: process.rss)
        if largest.rss > kind_peak.peak_single:
            kind_peak.peak_single, kind_peak.peak_single_command = largest.rss, largest.command
        for process in processes:
            kind_peak.cpu_from.setdefault(process.pid, process.cpu if process.pid in running_before else 0.0)
            kind_peak.cpu_last[process.pid] = process.cpu
            short = process.command[:160]
            if len(kind_peak.examples) < EXAMPLES and short not in kind_peak.examples:
                kind_peak.examples.append(short)


class Sampler:
    """Samples ``group(table)`` every ``interval`` s in a thread between ``start()`` and ``stop()``;
    ``peaks`` holds the result. Bounded: it stops by itself after ``max_seconds``."""

    def __init__(self, group: Callable[[dict[int, Proc]], Grouping], *, interval: float = 0.1,
                 max_seconds: float = 1800.0) -> None:
        self.group = group
        self.interval = interval
        self.max_seconds = max_seconds
        self.peaks: dict[str, SubjectPeak] = {}
        self.samples = 0
        self._first: frozenset[int] | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        try:
            waited = 0.0
            while waited <= self.max_seconds:
                self.sample()
                if self._stop.wait(self.interval):
                    break
                waited += self.interval
        except BaseException as error:
            self._error = error

    def sample(self) -> None:
        table = process_table()
        if self._first is None:
            self._first = frozenset(table)
        add_sample(self.peaks, table, self.group(table), self._first)
        self.samples += 1

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, SubjectPeak]:
        """Stop sampling (after one last sample) and return the peaks."""
        self._stop.set()
        self._thread.join(30)
        if self._error is not None:
            raise self._error
        self.sample()
        return self.peaks


def words(command: str) -> list[str]:
    return command.split()


def basename_of(argument: str) -> str:
    return argument.rsplit("/", 1)[-1]


def program(command: str) -> str:
    """The program a command line runs: the script when an interpreter runs one (``python3 /x/bin/nextdeploy``
    -> ``nextdeploy``; ``node /x/pm2/bin/pm2`` -> ``pm2``), else the executable's name."""
    parts = words(command)
    if not parts:
        return ""
    first = basename_of(parts[0])
    if (first.startswith("python") or first == "node") and len(parts) > 1:
        script = next((part for part in parts[1:] if not part.startswith("-")), "")
        if first.startswith("python") and parts[1:3] == ["-m", "nextdeploy"]:
            return "nextdeploy"
        return basename_of(script) or first
    return first


def host_kind(command: str) -> str:
    """The kind of a process on a fleet host: ``nextdeploy`` (its ``nextdeploy host ...``), ``rsync`` (the
    receiving end of a ship), ``pm2`` (the daemon or its CLI), ``app`` (the app's workers, preflight servers,
    any other node program), ``sshd``, or ``other`` (shells, ``node --version``, the test host's ``sleep``)."""
    name = program(command)
    if name == "nextdeploy":
        return "nextdeploy"
    if name == "rsync":
        return "rsync"
    if name.startswith("ProcessContainer"):  # a worker PM2 is starting, before the app names its process
        return "app"
    if command.startswith("PM2 ") or name == "pm2" or "/pm2/" in command:
        return "pm2"
    if command.startswith("sshd") or name == "sshd":
        return "sshd"
    if command.startswith("next-server") or (name.endswith((".js", ".cjs", ".mjs")) and "node" in command):
        return "app"
    return "other"


def controller_kind(command: str) -> str:
    """The kind of a process of the controller's deploy: ``nextdeploy`` (the deploy itself), ``ssh`` (ssh and
    rsync: the transport, the shared connections), or ``build`` (everything the build runs: the package
    manager, ``next build`` and its workers, and anything else)."""
    name = program(command)
    if name == "nextdeploy":
        return "nextdeploy"
    if name.rstrip(":") in ("ssh", "rsync"):  # a shared connection calls itself "ssh: <socket> [mux]"
        return "ssh"
    return "build"


def control_dirs(commands: Iterable[str]) -> set[str]:
    """The ``nd-ssh-*`` control dirs named in ssh command lines (``ControlPath=/tmp/nd-ssh-x/%C``): an ssh
    master forks away from the deploy (ControlPersist) and is found by its control dir instead."""
    found = set()
    for command in commands:
        for part in words(command):
            if "ControlPath=" in part:
                path = part.split("ControlPath=", 1)[1]
                found.add(path.rsplit("/", 1)[0])
    return found
