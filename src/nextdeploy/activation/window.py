"""The stability window: the one rule by which a new release is judged before it takes traffic.

A release is stable when it answers its health path healthy and stays up and healthy for ``[health]
stable_for`` s from its first good answer, within ``[health] timeout`` of its start. The preflight watches one
server outside PM2 (``preflight.py``); the held cut-over watches the new workers under PM2, held off the
public port (``held.py``). Both keep their state here and fail with the messages made here.

``StabilityWindow``: the rule and its messages. ``HeldWindow``: its state for the held cut-over's workers,
with pure methods that take what was observed (PM2's list, the held files, a probe's verdict, the time) and
say what to do next; ``held._window`` does the looking, listing, probing, spawning and sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nextdeploy.core.errors import PreflightError
from nextdeploy.pm2.client import Worker

STILL_SERVING = "the old release is still serving"
THE_RELEASE = "the new release"
# PM2 will not start these workers again by itself: no use waiting (also ``activate.GIVEN_UP``).
GIVEN_UP = ("errored", "stopped")

POLL = 0.02  # the held files, while the first answer is awaited (it starts the window)
# PM2's list costs its daemon 1-2 ms of CPU (it builds every process's entry), and the daemon is the cluster
# primary that hands new connections to the old workers: asked at most this often during the window.
LIST_POLL = 0.1
WINDOW_POLL = 0.2  # a worker that answered healthy is asked again at the preflight's pace
# The other new workers start once the first answers, or after this long: a Next.js worker's boot is ~0.5 s
# of CPU, and two at once on a small machine starve the old workers that serve meanwhile (bench: p99 and
# boot time). They boot within the first one's window; a slow-booting app does not wait twice as long.
REST_AFTER = 1.5
# After a failed probe in the window, how long to wait for the server to exit (a clearer error).
EXIT_GRACE = 0.5


def worker_subject(pm_id: int) -> str:
    return f"a new worker (PM2 id {pm_id})"


@dataclass
class StabilityWindow:
    """When each watched server (a key: the preflight's one, a PM2 id) first answered healthy, and what that
    means: the window starts with the first good answer of any, and ends ``stable_for`` s later."""

    stable_for: float
    timeout: float
    started: float  # the release's start: it must answer within ``timeout`` of it
    first_good: dict[int, float] = field(default_factory=dict)

    def answered(self, key: int, now: float) -> bool:
        """Record a good answer; True if it was this server's first."""
        if key in self.first_good:
            return False
        self.first_good[key] = now
        return True

    @property
    def opened(self) -> float | None:
        """When the window opened (the first good answer of any), or None."""
        return min(self.first_good.values()) if self.first_good else None

    @property
    def end(self) -> float | None:
        opened = self.opened
        return None if opened is None else opened + self.stable_for

    def over(self, now: float) -> bool:
        end = self.end
        return end is not None and now >= end

    def timed_out(self, now: float) -> bool:
        return now >= self.started + self.timeout

    def during(self, key: int, now: float, since_start: bool = False) -> str:
        """When in the window a server failed: "before answering ...", or how long after its first good
        answer (or, ``since_start``, after the release's start)."""
        if key not in self.first_good:
            return "before answering its health check"
        since = f"{now - self.started:.1f} s after start" if since_start else \
            f"{now - self.first_good[key]:.1f} s after its first good answer"
        return f"{since}, during the {self.stable_for:g} s stability window"

    def exited(self, subject: str, key: int, exit_code: int | None, now: float,
               since_start: bool = False) -> PreflightError:
        code = f" with code {exit_code}" if exit_code is not None else ""
        return PreflightError(f"{subject} exited{code} {self.during(key, now, since_start)}",
                              hint=f"fix the crash shown above ({STILL_SERVING})")

    def unhealthy(self, subject: str, key: int, problem: str, now: float) -> PreflightError:
        return PreflightError(f"{subject} became unhealthy {self.during(key, now)}: {problem}",
                              hint=f"fix the error shown above ({STILL_SERVING})")

    def not_healthy(self, problem: str | None, reason: str, health_hint: str) -> PreflightError:
        """``reason``: why the server says it is not ready (``preflight.launcher_reason``), or ""."""
        return PreflightError(f"{THE_RELEASE} was not healthy within {self.timeout:g} s: {problem}{reason}",
                              hint=f"{health_hint}; {STILL_SERVING}")


INCLUDE_FIX = "add the missing files with [release] include"


def fatal_output(subject: str, marker: str, hint: str, during: str = "") -> PreflightError:
    """``subject`` printed ``marker`` (``preflight.FATAL_OUTPUT_MARKERS``): broken even if it answers."""
    return PreflightError(f"{subject} printed {marker!r}{during}: a file is missing from the release", hint=hint)


class Next(enum.Enum):
    """What the held cut-over's window does after a round of looking (``HeldWindow.next``)."""

    SMOKE = "smoke"  # every new worker answers: run the smoke routes (once), then look again
    FRESH = "fresh"  # the window is over: look once more at everything, afresh
    DONE = "done"  # stable: approve
    TIMED_OUT = "timed out"  # not healthy within [health] timeout
    WAIT = "wait"  # sleep ``HeldWindow.pause`` s, then look again


@dataclass
class HeldWindow:
    """The held cut-over's window over the new workers (those not in ``old_ids``), as pure decisions.

    A round: ``begin`` (True: list PM2's workers) -> ``listed`` (raises if a new worker exited or restarted)
    -> ``due`` (the held workers to probe) -> ``probed`` for each -> ``rest_due`` -> ``next``, then ``pause``.
    While they boot, only what is cheap is looked at every POLL (the held files); PM2's list every LIST_POLL,
    a healthy worker's health every WINDOW_POLL, and all of it once more, fresh, before the end."""

    window: StabilityWindow
    old_ids: frozenset[int]
    instances: int
    # pm_id -> (pid, restart count) when first seen: a duplicate starts with its model's restart count.
    first_seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    last_good: dict[int, float] = field(default_factory=dict)  # pm_id -> when it last answered healthy
    new: list[Worker] = field(default_factory=list)
    listed_pids: set[int] = field(default_factory=set)  # every worker's (an old one restarted is held too)
    listed_at: float = -LIST_POLL
    fresh: bool = False  # this round lists and probes everything (the last round before the approval)
    rest_spawned: bool = False
    smoke_checked: bool = False
    now: float = 0.0  # when this round began
    problem: str | None = None  # this round's first reason not to be done yet
    ports: dict[int, int] = field(default_factory=dict)  # pm_id -> private port, this round

    def begin(self, now: float, held_pids: Iterable[int]) -> bool:
        """Start a round at ``now``; ``held_pids``: the pids with a held file. True: ask PM2 for its list
        (a fresh round, LIST_POLL since the last, or a held worker not listed yet)."""
        self.now = now
        return self.fresh or now - self.listed_at >= LIST_POLL or not set(held_pids) <= self.listed_pids

    def listed(self, workers: list[Worker]) -> None:
        """PM2's list: raises PreflightError if a new worker exited or was restarted since first seen."""
        self.new = [worker for worker in workers if worker.pm_id not in self.old_ids]
        self.listed_pids = {worker.pid for worker in workers}
        self.listed_at = self.now
        for worker in self.new:
            if worker.pid and worker.pm_id not in self.first_seen:
                self.first_seen[worker.pm_id] = (worker.pid, worker.restarts)
            pid, restarts = self.first_seen.get(worker.pm_id, (worker.pid, worker.restarts))
            if worker.status in GIVEN_UP or worker.pid != pid or worker.restarts != restarts:
                raise self.window.exited(worker_subject(worker.pm_id), worker.pm_id, worker.exit_code, self.now)

    def due(self, held: Mapping[int, int]) -> list[tuple[Worker, int]]:
        """``held``: pid -> private port of every held worker. The new workers to probe (with their port):
        each held one, unless it answered healthy less than WINDOW_POLL ago."""
        self.problem = None
        self.ports = {}
        due: list[tuple[Worker, int]] = []
        for worker in self.new:
            port = held.get(worker.pid)
            if port is None:
                self.problem = self.problem or f"worker {worker.pm_id} is not ready yet"
                continue
            self.ports[worker.pm_id] = port
            if self.fresh or self.now - self.last_good.get(worker.pm_id, -WINDOW_POLL) >= WINDOW_POLL:
                due.append((worker, port))
        return due

    def probed(self, worker: Worker, problem: str | None, now: float) -> bool:
        """A probe's verdict (``problem`` None: healthy) at ``now``. True if the worker had answered healthy
        before and no longer does: it failed in the window (see ``unhealthy``)."""
        if problem is None:
            self.window.answered(worker.pm_id, now)
            self.last_good[worker.pm_id] = now
            return False
        if worker.pm_id in self.window.first_good:
            return True
        self.problem = self.problem or problem
        return False

    def unhealthy(self, worker: Worker, again: Worker | None, problem: str, now: float) -> PreflightError:
        """The error for a worker that answered healthy and no longer does; ``again``: how PM2 lists it a
        moment later (None: gone). A worker on its way out is said to have exited."""
        if again is None or again.pid != worker.pid or again.restarts != worker.restarts:
            return self.window.exited(worker_subject(worker.pm_id), worker.pm_id, None, now)
        return self.window.unhealthy(worker_subject(worker.pm_id), worker.pm_id, problem, now)

    def rest_due(self, spawned: float) -> bool:
        """Start the other new workers now (once): the first one answered, or REST_AFTER s went by since
        ``spawned``."""
        if self.rest_spawned or not (self.ports or self.now - spawned >= REST_AFTER):
            return False
        self.rest_spawned = True
        return True

    def next(self, now: float) -> Next:
        """What to do after this round; ``now``: the time after its probes."""
        if len(self.new) < self.instances:
            self.problem = self.problem or f"{len(self.new)} of {self.instances} new workers started"
        if self.problem is None and not self.smoke_checked:
            self.smoke_checked = True
            return Next.SMOKE
        if self.problem is None and self.window.over(now):
            if not self.fresh:
                self.fresh = True
                return Next.FRESH
            return Next.DONE
        self.fresh = False
        if self.problem is not None and self.window.timed_out(self.now):
            return Next.TIMED_OUT
        return Next.WAIT

    def pause(self, now: float) -> float:
        """How long to sleep before the next round: POLL until the window opens and after its end (every
        moment counts), else at most WINDOW_POLL, up to its end."""
        end = self.window.end
        if end is None or now >= end:
            return POLL
        return max(POLL, min(WINDOW_POLL, end - now))

    def smoke_port(self) -> int:
        return next(iter(self.ports.values()))
