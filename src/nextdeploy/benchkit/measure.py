"""Pure measurements: steps parsed from a deploy's progress lines, request windows, latency, disk usage.

Times are ``time.monotonic()`` seconds unless a name says otherwise; a load's records are relative to
its own ``t0_monotonic`` and are converted with :func:`to_load_time`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nextdeploy.core.steps import StepName, untag
from nextdeploy.demo.loadgen import RequestRecord, percentile

# The progress format of nextdeploy.core.ui.Reporter with --json (on stderr): ``... [name] title`` when a step
# starts, ``ok  [name] title (1.2 s)`` or ``FAILED [name] title (1.2 s)`` when it ends (nextdeploy.core.steps).
_STEP_START = re.compile(r"^\.\.\. (?P<text>.+)$")
_STEP_END = re.compile(r"^(?P<mark>ok |FAILED) (?P<text>.+) \((?P<seconds>[0-9.]+) s\)$")
_RELEASE = re.compile(r"^release (?P<id>\S+)$")

BUILD_STEP = StepName.BUILD
# The stability window: the preflight on a private port, or the held cut-over's window under PM2.
WINDOW_STEPS = (StepName.PREFLIGHT, StepName.HELD)


@dataclass(frozen=True)
class Step:
    """One step of a deploy, timed by when its progress lines were read: its stable name (None for an
    untagged line) and its title."""

    name: str | None
    title: str
    start: float
    end: float | None = None
    ok: bool | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


def parse_steps(lines: Iterable[tuple[float, str]]) -> list[Step]:
    """Steps from timestamped Reporter lines (``... [name] title`` then ``ok  [name] title (1.2 s)``), in
    start order."""
    open_steps: dict[str, float] = {}
    steps: list[Step] = []
    for stamp, raw in lines:
        line = raw.rstrip()
        ended = _STEP_END.match(line)
        if ended:
            text = ended["text"]
            start = open_steps.pop(text, stamp - float(ended["seconds"]))
            steps.append(Step(*untag(text), start, stamp, ended["mark"] == "ok "))
            continue
        started = _STEP_START.match(line)
        if started:
            open_steps[started["text"]] = stamp
    steps.extend(Step(*untag(text), start) for text, start in open_steps.items())
    return sorted(steps, key=lambda step: step.start)


def step_started(line: str) -> str | None:
    """The stable name of the step a progress line starts, if it is one (a live line hook's test)."""
    started = _STEP_START.match(line.rstrip())
    return untag(started["text"])[0] if started else None


def find_step(steps: Sequence[Step], names: StepName | Iterable[StepName], last: bool = False) -> Step | None:
    """The first (or last) step with that stable name (or one of them)."""
    wanted = {names} if isinstance(names, StepName) else set(names)
    matching = [step for step in steps if step.name in wanted]
    if not matching:
        return None
    return matching[-1] if last else matching[0]


def stability_window(steps: Sequence[Step], window: float | None) -> float | None:
    """The stability window (``window`` s, the config's ``[health] stable_for``) if the command waited one."""
    return window if find_step(steps, WINDOW_STEPS) else None


def release_of(lines: Iterable[tuple[float, str]]) -> str | None:
    """The release id a deploy announced (``release <id>``)."""
    for _, line in lines:
        found = _RELEASE.match(line.strip())
        if found:
            return found["id"]
    return None


def to_load_time(monotonic: float, t0_monotonic: float) -> float:
    """A ``time.monotonic()`` instant on a load's timeline (seconds since the load started)."""
    return monotonic - t0_monotonic


Window = tuple[float, float]


def in_window(records: Iterable[RequestRecord], window: Window) -> list[RequestRecord]:
    """Records of requests that started inside ``window`` (load time)."""
    lo, hi = window
    return [record for record in records if lo <= record.start < hi]


def failed(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    return [record for record in records if record.failed]


def error_kinds(records: Iterable[RequestRecord]) -> dict[str, int]:
    """Failures by kind: exception class name or ``HTTP <status>``."""
    return dict(Counter(r.error or f"HTTP {r.status}" for r in records if r.failed))


@dataclass(frozen=True)
class Latency:
    """Latency of a set of requests, in milliseconds."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def latency(records: Iterable[RequestRecord]) -> Latency:
    """p50/p99/max of every request's latency (failed ones included: a timeout is a latency too)."""
    values = sorted(record.latency for record in records)
    if not values:
        return Latency(0, None, None, None)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return Latency(len(values), ms(percentile(values, 50)), ms(percentile(values, 99)), ms(values[-1]))


def latency_histogram(records: Iterable[RequestRecord]) -> dict[str, int]:
    """How many requests took each latency, in ms rounded to 3 significant digits (0.5 % at most off).

    Small enough to keep per run and window in the results JSON, and exact enough to pool: the p99 of
    all the deploys' requests together, where one run's 1 s activation window (~200 requests) makes
    its own "p99" the 2nd or 3rd slowest request."""
    counts: Counter[str] = Counter()
    for record in records:
        counts[_three_digits(record.latency * 1000)] += 1
    return dict(sorted(counts.items(), key=lambda item: float(item[0])))


def _three_digits(ms: float) -> str:
    if ms <= 0:
        return "0"
    return f"{float(f'{ms:.3g}'):g}"


def pooled_percentile(histograms: Iterable[dict[str, int]], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), in ms, of the requests of several latency histograms."""
    counts: Counter[float] = Counter()
    for histogram in histograms:
        for key, count in histogram.items():
            counts[float(key)] += count
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for ms in sorted(counts):
        seen += counts[ms]
        if seen >= rank:
            return ms
    raise AssertionError("unreachable: the ranks add up to the total")


def releases_answering(records: Iterable[RequestRecord]) -> dict[str, int]:
    """How many successful answers each release gave."""
    return dict(Counter(record.release or "?" for record in records if not record.failed))


def cutover_seconds(records: Sequence[RequestRecord], since: float, new_release: str,
                    until: float = float("inf")) -> float | None:
    """Seconds from ``since`` (load time) until the last answer from any other release (among requests
    started before ``until``, e.g. the next deploy), or None if the new release never answered. 0 when no
    other release answered after ``since``."""
    after = [record for record in records if since <= record.start < until and not record.failed]
    if not any(record.release == new_release for record in after):
        return None
    others = [record.start + record.latency for record in after if record.release != new_release]
    return round(max(others) - since, 3) if others else 0.0


def failed_around(records: Iterable[RequestRecord], instant: float, after: float = 0.5,
                  slack: float = 0.05) -> list[RequestRecord]:
    """Failed requests in flight at ``instant`` or sent within ``after`` s of it: what a SIGKILLed worker
    takes with it (its in-flight requests, and requests already on their way over its keep-alive sockets)."""
    return [r for r in records
            if r.failed and r.start + r.latency + slack >= instant and r.start <= instant + after]


@dataclass(frozen=True)
class Bin:
    """One slice of the timeline."""

    t: float  # start of the bin, load time
    ok: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def timeline(records: Sequence[RequestRecord], bin_seconds: float = 0.5) -> list[Bin]:
    """Requests per bin (by start time) with their latency percentiles."""
    if not records:
        return []
    count = int(max(record.start for record in records) // bin_seconds) + 1
    buckets: list[list[RequestRecord]] = [[] for _ in range(count)]
    for record in records:
        buckets[int(record.start // bin_seconds)].append(record)
    bins: list[Bin] = []
    for index, bucket in enumerate(buckets):
        stats = latency(bucket)
        bad = sum(1 for record in bucket if record.failed)
        bins.append(Bin(round(index * bin_seconds, 3), len(bucket) - bad, bad, stats.p50_ms, stats.p99_ms,
                        stats.max_ms))
    return bins


@dataclass(frozen=True)
class DiskUsage:
    """What one release adds on disk."""

    apparent_bytes: int  # sum of file sizes (``du --apparent-size``)
    disk_bytes: int  # allocated blocks of inodes not shared with other releases (``du`` across releases)
    files: int
    shared_inodes: int  # files hard-linked with another release (counted once, in the other release)


def disk_usage(release_dir: Path, other_releases: Iterable[Path]) -> DiskUsage:
    """``du``-style usage of ``release_dir`` beyond ``other_releases``: hard links are counted once."""
    seen: set[tuple[int, int]] = set()
    for other in other_releases:
        for path in _walk(other):
            info = os.lstat(path)
            if info.st_nlink > 1:
                seen.add((info.st_dev, info.st_ino))
    apparent = disk = files = shared = 0
    counted: set[tuple[int, int]] = set()
    for path in [str(release_dir), *_walk(release_dir)]:
        info = os.lstat(path)
        key = (info.st_dev, info.st_ino)
        if not os.path.islink(path) and not os.path.isdir(path):
            files += 1
            apparent += info.st_size
        if key in seen:
            shared += 1
            continue
        if key in counted:
            continue
        counted.add(key)
        disk += info.st_blocks * 512
    return DiskUsage(apparent, disk, files, shared)


def _walk(directory: Path) -> list[str]:
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        paths.extend(os.path.join(dirpath, name) for name in (*dirnames, *filenames))
    return paths
