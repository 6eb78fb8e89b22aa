"""The host's side of the fleet's read commands: ``nextdeploy host releases`` and ``host logs`` (their controller's
side is ``fleet.commands``). Apart from it so that a host, running one of them, imports none of the controller's
modules (the ssh transport, the session, the lock's controller side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nextdeploy.core.context import Context


@dataclass(frozen=True)
class Answer:
    """A host command's result: any JSON object."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.data


def host_releases(ctx: Context) -> Answer:
    """The live release, the release log's rows, the releases here that could go live (complete, never
    failed: also those a controller copied here and never activated), and this host's own rollback target."""
    from nextdeploy.activation.activate import current_release
    from nextdeploy.cli.releases_cmd import release_rows
    from nextdeploy.core.ids import is_release_id
    from nextdeploy.core.manifest import is_complete
    from nextdeploy.core.releaselog import Status
    from nextdeploy.core.retention import rollback_target

    records = ctx.log.records()
    unusable = {record.id for record in records if record.status in (Status.FAILED, Status.REMOVED)}
    releases_dir = ctx.paths.releases_dir
    on_disk = sorted(path.name for path in releases_dir.iterdir()) if releases_dir.is_dir() else []
    usable = [release for release in on_disk
              if is_release_id(release) and release not in unusable and is_complete(releases_dir / release)]
    current = current_release(ctx)
    return Answer({"current": current, "releases": release_rows(ctx), "usable": usable,
                   "rollback_target": rollback_target(records, current)})


def host_logs(ctx: Context, lines: int) -> Answer:
    from nextdeploy.cli.logs_cmd import tails
    from nextdeploy.procedures.status import pm2_as_it_is

    _, _, missing = pm2_as_it_is(ctx)
    return Answer({"streams": [{"path": str(path), "lines": last} for path, last in tails(ctx, lines)],
                   "not_running": str(missing) if missing is not None else None})
