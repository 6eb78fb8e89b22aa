"""Choosing the rollback target and the releases to delete. Pure: works on log records only.

Rules (from what went wrong in Capistrano, Deployer and the seed script):
- order by the release log, never by mtime;
- failed, unfinished and never-activated releases go first and never count toward ``keep``;
- the live release and the rollback target are never removed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from nextdeploy.core.releaselog import ReleaseRecord, Status


def rollback_target(records: Sequence[ReleaseRecord], current: str | None) -> str | None:
    """Of the usable releases created before ``current``, the one that was live most recently.

    Created-before keeps repeated rollbacks walking back in time (never flip-flopping to the release
    just rolled back from); most-recently-live skips a release the user already rolled back away from.
    """
    ids = [record.id for record in records]
    older = records[: ids.index(current)] if current in ids else [r for r in records if r.id != current]
    usable = [record for record in older if record.usable]
    return max(usable, key=lambda record: record.live_seq).id if usable else None


def releases_to_remove(records: Sequence[ReleaseRecord], on_disk: Collection[str], current: str | None,
                       keep: int, protect: Collection[str] = ()) -> list[str]:
    """Release ids to delete so that at most ``keep`` good releases remain on disk."""
    protected = {current, rollback_target(records, current), *protect} - {None}
    known = {record.id: record for record in records}
    remove: list[str] = []
    good: list[str] = []
    for record in records:
        if record.id not in on_disk or record.id in protected:
            continue
        if record.status is Status.ACTIVE:
            good.append(record.id)
        else:
            remove.append(record.id)  # failed, unfinished, never activated
    # Good releases are kept newest first; protected ones use up places too.
    places = max(0, keep - len([p for p in protected if p in on_disk and p in known]))
    remove.extend(good[: max(0, len(good) - places)])
    return remove
