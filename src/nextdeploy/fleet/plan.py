"""The fleet's decisions, as pure functions of plain values: nothing here reaches a host.

- ``rollout_waves``: in which groups the hosts switch. Config order; the first ``canary`` hosts alone,
  then batches of ``batch`` hosts (a number, or ``"N%"`` of the hosts left after the canary), at least 1.
- ``after_rollout``: all or nothing. Given what happened on each host (and whether the controller was
  interrupted: Ctrl-C, SIGTERM), which hosts must be put back to the previous release (they switched),
  which are left untouched (they never switched, or their own failure path already put them back), and
  which cannot be judged (lost or abandoned mid-step: converged next time); ``interrupted_message`` says
  what an interrupted rollout left (``nothing_switched_message`` when no host had switched).
- ``convergence``: given each host's status, is the fleet on one release or mixed, and if mixed, which
  release every host should serve and which hosts to move (e.g. after a controller was killed mid-rollout:
  the release the deploy was installing if it is present and checked everywhere, else the previous one).

Every value is a small frozen dataclass whose ``to_json()`` is plain JSON (the controller logs it,
``--json`` prints it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, cast

from nextdeploy.core.errors import ConfigError

_PERCENT = re.compile(r"^\s*([0-9]{1,3})\s*%\s*$")


# --- the rollout order ------------------------------------------------------------------------------


def batch_size(batch: int | str, remaining: int) -> int:
    """How many hosts switch together after the canary: ``batch`` hosts, or ``"N%"`` of the ``remaining``
    ones (rounded down), never fewer than 1. Raises ConfigError for anything else."""
    if isinstance(batch, bool):  # a bool is an int to Python, never to the config's reader
        raise _bad_batch(batch)
    if isinstance(batch, int):
        if batch < 1:
            raise _bad_batch(batch)
        return batch
    match = _PERCENT.match(batch)
    if not match or not 1 <= int(match[1]) <= 100:
        raise _bad_batch(batch)
    return max(1, remaining * int(match[1]) // 100)


def _bad_batch(batch: object) -> ConfigError:
    return ConfigError(f"[rollout] batch = {batch!r} is neither a number of hosts nor a percentage",
                       hint='write a whole number >= 1 (batch = 2) or a percentage from 1% to 100% (batch = "50%")')


def rollout_waves(hosts: Sequence[str], canary: int = 1, batch: int | str = 1) -> tuple[tuple[str, ...], ...]:
    """The hosts in the groups they switch in, first to last: the canary group (the first ``canary``
    hosts), then batches. Every host is in exactly one group, in config order."""
    if len(set(hosts)) != len(hosts):
        twice = sorted({host for host in hosts if hosts.count(host) > 1})
        raise ConfigError(f"[[hosts]] lists {', '.join(twice)} more than once",
                          hint="list each host once")
    if isinstance(canary, bool) or not isinstance(canary, int) or canary < 0:
        raise ConfigError(f"[rollout] canary = {canary!r} is not a number of hosts",
                          hint="write a whole number >= 0 (0: no canary, the first batch goes first)")
    waves: list[tuple[str, ...]] = []
    first = min(canary, len(hosts))
    if first:
        waves.append(tuple(hosts[:first]))
    rest = list(hosts[first:])
    size = batch_size(batch, len(rest))
    waves.extend(tuple(rest[start:start + size]) for start in range(0, len(rest), size))
    return tuple(waves)


# --- all or nothing ---------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What happened on one host during a rollout."""

    SWITCHED = "switched"  # the new release took traffic and passed its checks
    FAILED = "failed"  # the host reported a failure at a step (it says what it serves now)
    NOT_STARTED = "not_started"  # the rollout stopped before reaching it
    UNREACHABLE = "unreachable"  # the host could not be reached (before its activation, or lost during it)
    ABANDONED = "abandoned"  # still at its step when an interrupted controller stopped waiting for it
    PROVEN = "proven"  # passed its checks, waits at the gate (``host activate --gate``): nothing switched
    ABORTED = "aborted"  # proven (or on its way), then told to abort at the gate: nothing switched


@dataclass(frozen=True)
class HostOutcome:
    host: str
    outcome: Outcome
    step: str | None = None  # the step it failed at, or was at when it was lost
    error: str | None = None  # what it (or ssh) said
    live: str | None = None  # for FAILED: the release it reports serving after its own failure path


@dataclass(frozen=True)
class RolloutDecision:
    """What the controller does once the rollout is over."""

    target: str  # the release the rollout installed
    previous: str | None  # the release the fleet served before
    put_back: tuple[str, ...]  # to switch back to ``previous`` (in parallel)
    untouched: tuple[str, ...]  # serving ``previous`` (or never changed): left alone
    unknown: tuple[str, ...]  # lost in the middle of a step: their state is read and converged next time
    failure: HostOutcome | None  # the first host that failed (config order), None when all switched
    interrupted: str | None = None  # the signal that stopped the controller during the rollout (SIGINT...)

    @property
    def succeeded(self) -> bool:
        return self.failure is None and self.interrupted is None

    def message(self) -> str:
        """The one line naming the failed host, its step and what it said; or the interrupt ('' when the
        rollout succeeded)."""
        if self.failure is None:
            return f"interrupted by {self.interrupted}" if self.interrupted else ""
        failed = self.failure
        at = f" at {failed.step}" if failed.step else ""
        said = f": {failed.error}" if failed.error else ""
        what = "was lost" if failed.outcome is Outcome.UNREACHABLE else "failed"
        return f"{failed.host} {what}{at}{said}"

    def to_json(self) -> dict[str, Any]:
        return _json(self)


def after_rollout(outcomes: Sequence[HostOutcome], target: str, previous: str | None,
                  interrupted: str | None = None) -> RolloutDecision:
    """All or nothing: every host is switched, or every host that switched is put back.

    A host that switched is put back when any host did not switch, or when the controller was
    ``interrupted`` during the rollout (even after the last wave: nothing of an interrupted run stays
    live). A host that failed is put back only if it still serves ``target`` (its own failure path
    normally put the previous release back already). A host lost before its activation began is
    untouched; one lost during it (``step`` set), or abandoned at it by an interrupted controller, is
    unknown: it may have switched, and cannot be asked now. A host proven at the gate, or aborted there,
    never switched: untouched (a gate left waiting rejects the release when the controller goes away)."""
    failure = next((outcome for outcome in outcomes
                    if outcome.outcome in (Outcome.FAILED, Outcome.UNREACHABLE)), None)
    stopped = any(outcome.outcome in (Outcome.NOT_STARTED, Outcome.ABANDONED, Outcome.PROVEN, Outcome.ABORTED)
                  for outcome in outcomes)
    if failure is None and interrupted is None and stopped:
        raise ValueError("a rollout with hosts not started must name the host or the signal that stopped it")
    if failure is None and interrupted is None:
        return RolloutDecision(target, previous, (), (), (), None)
    put_back: list[str] = []
    untouched: list[str] = []
    unknown: list[str] = []
    for outcome in outcomes:
        if outcome.outcome is Outcome.SWITCHED or (outcome.outcome is Outcome.FAILED and outcome.live == target):
            put_back.append(outcome.host)
        elif (outcome.outcome is Outcome.UNREACHABLE and outcome.step is not None) or \
                outcome.outcome is Outcome.ABANDONED:
            unknown.append(outcome.host)
        else:
            untouched.append(outcome.host)
    return RolloutDecision(target, previous, tuple(put_back), tuple(untouched), tuple(unknown), failure,
                           interrupted)


def interrupted_message(decision: RolloutDecision, live: Mapping[str, str | None] | None = None) -> str:
    """The one line an interrupted rollout ends with, once ``decision.put_back`` are back: the signal, the
    hosts put back, and what the hosts serve now. ``live``: what each host served before (default: every
    host ``decision.previous``), said when no host switched nor was left at its step."""
    if not decision.put_back and not decision.unknown:
        before = live if live is not None else dict.fromkeys(decision.untouched, decision.previous)
        return nothing_switched_message(str(decision.interrupted), before)
    said = [f"interrupted by {decision.interrupted} during the rollout of {decision.target}"]
    if decision.put_back:
        said.append(f"put {', '.join(decision.put_back)} back to {decision.previous or 'nothing (stopped)'}")
    else:
        said.append("no host had switched")
    if decision.unknown:
        said.append(f"{', '.join(decision.unknown)} still at it when abandoned (its own nextdeploy finishes it): "
                    "the next deploy or rollback converges the fleet")
    else:
        said.append("every host serves what it served before")
    return "; ".join(said)


def nothing_switched_message(signal_name: str, live: Mapping[str, str | None] | None) -> str:
    """The one line of a fleet command stopped before any host was told to switch (set-up, lock, build, ship,
    prepare, or while every host proves the release). ``live``: what each host serves, when it was read
    (None: not read yet)."""
    said = f"interrupted by {signal_name} before any host switched: "
    releases = set((live or {}).values())
    if live is None or not live:
        return said + "every host still serves what it served (nothing live changed)"
    if releases == {None}:
        return said + "nothing was live on any host, and nothing is (nothing live changed)"
    if len(releases) == 1:
        return said + f"every host still serves {releases.pop()} (nothing live changed)"
    return said + ("every host still serves what it served: "
                   + ", ".join(f"{host} {release or 'none'}" for host, release in live.items())
                   + " (nothing live changed)")


# --- convergence ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    """One host as a fresh ``status`` saw it."""

    host: str
    reachable: bool
    live: str | None = None  # the release it serves, None when it serves none
    ready: tuple[str, ...] = ()  # releases present on it, complete and checked (usable)

    def to_json(self) -> dict[str, Any]:
        return _json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostStatus:
        return cls(str(data["host"]), bool(data["reachable"]), data.get("live"),
                   tuple(str(release) for release in data.get("ready", ())))


class Verdict(StrEnum):
    UNIFORM = "uniform"  # every host reachable and serving the same release (or every one none)
    MIXED = "mixed"  # the reachable hosts serve different releases (or some serve none)
    UNKNOWN = "unknown"  # the reachable hosts agree, but some hosts could not be asked


@dataclass(frozen=True)
class Convergence:
    verdict: Verdict
    live: dict[str, tuple[str, ...]]  # release id (or "" for none) -> the hosts serving it
    target: str | None  # the release every host should serve; None when no release is ready everywhere
    move: tuple[str, ...]  # reachable hosts to switch to ``target``
    unreachable: tuple[str, ...]

    @property
    def converged(self) -> bool:
        return self.verdict is Verdict.UNIFORM

    def to_json(self) -> dict[str, Any]:
        return _json(self)


def convergence(statuses: Sequence[HostStatus], installing: str | None = None,
                previous: str | None = None) -> Convergence:
    """Whether the fleet serves one release, and what converging means.

    ``installing`` and ``previous``: what an interrupted deploy was doing, when the controller knows (its
    record on the hosts). The target is the first of these that is ready (present and checked) on every
    reachable host: ``installing``; else the live releases, newest first (release ids sort by creation
    time: an interrupted rollout's release is the newest); else ``previous``. None when none is ready
    everywhere (then no host is moved)."""
    reachable = [status for status in statuses if status.reachable]
    unreachable = tuple(status.host for status in statuses if not status.reachable)
    live: dict[str, list[str]] = {}
    for status in reachable:
        live.setdefault(status.live or "", []).append(status.host)
    serving = sorted((release for release in live if release), reverse=True)
    if len(live) == 1:  # one release everywhere (or none anywhere: a fleet not deployed yet)
        verdict = Verdict.UNKNOWN if unreachable else Verdict.UNIFORM
    elif not live:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.MIXED
    if verdict is not Verdict.MIXED:  # the reachable hosts agree: nothing to move
        agreed = serving[0] if serving else None
        return Convergence(verdict, {release: tuple(hosts) for release, hosts in live.items()}, agreed, (),
                           unreachable)
    candidates = _unique([*([installing] if installing else []), *serving, *([previous] if previous else [])])
    target = next((release for release in candidates if all(release in status.ready for status in reachable)),
                  None)
    move = tuple(status.host for status in reachable if target is not None and status.live != target)
    return Convergence(verdict, {release: tuple(hosts) for release, hosts in live.items()}, target, move, unreachable)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _json(value: Any) -> dict[str, Any]:
    """A dataclass as plain JSON values (enums as their strings, tuples as lists)."""
    return cast(dict[str, Any], _plain(asdict(value)))


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
