"""The append-only release log (``<root>/releases.jsonl``) and the release states derived from it.

One JSON object per line: ``{"ts": ..., "event": ..., "release": ..., ...}``. The log is the only
source of ordering and of a release's status; directory mtimes are never used (they change when a
release is touched, which made Capistrano's cleanup pick the wrong releases).

Events, in the order a deploy writes them:
  building     a build started (the release dir may be half-made until ``built``)
  built        the release is assembled and complete
  failed       build, preflight or activation failed (sticky: never chosen by rollback again)
  refused      a rollback target failed its check and was not (or no longer) live; it served well before,
               so it stays usable (not sticky)
  switching    ``current`` is about to move from ``from`` to ``release``
  activated    the release is live and verified
  rolled_back  ``current`` was moved back to ``release`` (from ``from``)
  removed      retention deleted the release
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    UNFINISHED = "unfinished"  # building, or the build died
    READY = "ready"  # complete, never activated
    ACTIVE = "active"  # activated (or rolled back to) at least once, never failed
    FAILED = "failed"
    REMOVED = "removed"


@dataclass
class ReleaseRecord:
    """What the log says about one release."""

    id: str
    status: Status = Status.UNFINISHED
    created_at: str | None = None
    revision: str | None = None
    activated_at: str | None = None
    # Position in the log of its latest activation or rollback-to: "which was live most recently".
    live_seq: int = -1
    reason: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Can serve users: rollback targets and retention's good releases."""
        return self.status is Status.ACTIVE


@dataclass(frozen=True)
class PendingSwitch:
    """A ``switching`` event with no outcome after it: the deploy died mid-activation."""

    release: str
    previous: str | None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReleaseLog:
    """Appends events durably; reads them back tolerating a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, release: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": now_iso(), "event": event, "release": release, **fields}
        line = json.dumps(entry, sort_keys=True) + "\n"
        # O_APPEND writes of one short line are atomic with respect to other appenders.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A crash mid-write can leave a torn last line: start ours on a fresh line.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        # A byte that is not UTF-8 (a damaged or hand-edited log) spoils its line only, as a torn line does.
        for raw in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write: ignore it
            if isinstance(entry, dict) and "event" in entry and "release" in entry:
                entries.append(entry)
        return entries

    def records(self) -> list[ReleaseRecord]:
        return fold(self.events())


def fold(events: Iterable[dict[str, Any]]) -> list[ReleaseRecord]:
    """Release records in order of first appearance in the log (oldest first)."""
    records: dict[str, ReleaseRecord] = {}
    for seq, entry in enumerate(events):
        release_id = str(entry["release"])
        record = records.setdefault(release_id, ReleaseRecord(id=release_id))
        record.events.append(entry)
        event = entry["event"]
        if event == "building":
            record.created_at = record.created_at or entry.get("ts")
        elif event == "built":
            record.created_at = record.created_at or entry.get("ts")
            record.revision = entry.get("revision", record.revision)
            if record.status is Status.UNFINISHED:
                record.status = Status.READY
        elif event == "failed":
            record.status = Status.FAILED
            record.reason = entry.get("reason")
        elif event in ("activated", "rolled_back"):
            if record.status is not Status.FAILED:
                record.status = Status.ACTIVE
                record.activated_at = entry.get("ts")
                record.live_seq = seq
        elif event == "removed":
            record.status = Status.REMOVED
    return list(records.values())


def pending_switch(events: list[dict[str, Any]]) -> PendingSwitch | None:
    """The last ``switching`` event if nothing settled it (activated, failed or rolled back after it)."""
    for index in range(len(events) - 1, -1, -1):
        entry = events[index]
        if entry["event"] == "switching":
            settled = any(
                later["event"] in ("activated", "rolled_back")
                or (later["event"] in ("failed", "refused") and later["release"] == entry["release"])
                for later in events[index + 1 :]
            )
            if settled:
                return None
            return PendingSwitch(release=str(entry["release"]), previous=entry.get("from"))
    return None
