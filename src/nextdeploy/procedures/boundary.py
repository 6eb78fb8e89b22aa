"""The host boundary: every procedure that changes or reads what one host serves, as a function of that host's
``Context``, returning a result with ``to_json()`` and raising ``NextdeployError`` subclasses for expected
failures. A fleet controller drives these over SSH through ``nextdeploy host ...`` (``cli/host_cmd.py``).

    activate_release  put a release already on the host (built and assembled under releases/) live
    rollback          put an earlier good release back (``procedures.rollback``)
    start, stop       serve the live release again, take the app out of PM2 (``procedures.lifecycle``)
    host_status       what serves, read without changing anything (``procedures.status``)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from nextdeploy.activation.activate import current_release, settle
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ReleaseError, ReleaseNotFoundError
from nextdeploy.core.manifest import is_approved, is_complete, layout_of, read_manifest
from nextdeploy.core.releaselog import Status
from nextdeploy.nextjs.prepare import check_node
from nextdeploy.nextjs.skew import bridge_static_assets
from nextdeploy.procedures.deploy import DeployResult, put_live
from nextdeploy.procedures.lifecycle import StartResult, StopResult, changing_live_state, start, stop
from nextdeploy.procedures.retention import retain
from nextdeploy.procedures.rollback import rollback
from nextdeploy.procedures.status import Status as HostStatus
from nextdeploy.procedures.status import host_status
from nextdeploy.release.secrets import SERVER_ACTIONS_ENV, ensure_server_actions_key


class HostResult(Protocol):
    """What every host procedure returns: ``to_json()`` is a dict that ``json.dumps`` serializes."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class ActivateResult(DeployResult):
    already_live: bool = False  # it was live already: nothing changed (running it again is harmless)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "already_live": self.already_live}


def activate_release(ctx: Context, release_id: str, lock_timeout: float = 0.0) -> ActivateResult:
    """Put ``release_id``, already complete under ``releases/``, live as a deploy's last step does: checked
    first (by the held cut-over on its workers, or a preflight unless it passed one), then verified and saved;
    retention after. Live already: nothing changes. Raises ReleaseNotFoundError or ReleaseError, with
    nothing live changed, for a release that is missing, incomplete or failed."""
    started = time.monotonic()
    with changing_live_state(ctx, "nextdeploy host activate", lock_timeout) as pm2:
        current = current_release(ctx)
        _check_activatable(ctx, release_id)
        release_dir = ctx.paths.release_dir(release_id)
        manifest = read_manifest(release_dir) or {}
        if release_id == current:
            return ActivateResult(release_id, current, time.monotonic() - started, 0.0, [], manifest,
                                  already_live=True)
        layout = layout_of(release_dir)
        assert layout is not None  # complete: it has its manifest
        check_node(layout)
        bridge_static_assets(ctx, release_id)
        secrets = {SERVER_ACTIONS_ENV: ensure_server_actions_key(ctx.config, ctx.paths)}
        try:
            report = put_live(ctx, pm2, release_id, layout, current, secrets, checked=is_approved(release_dir))
            removed = retain(ctx)
        finally:
            settle(ctx)
    return ActivateResult(release_id, current, time.monotonic() - started, report.seconds, removed, manifest)


def _check_activatable(ctx: Context, release_id: str) -> None:
    release_dir = ctx.paths.release_dir(release_id)
    record = next((r for r in ctx.log.records() if r.id == release_id), None)
    if not release_dir.is_dir() or (record is not None and record.status is Status.REMOVED):
        raise ReleaseNotFoundError(f"no release {release_id!r} in {ctx.paths.releases_dir}",
                                   hint="pick an id from `nextdeploy releases`, or build or ship it there first")
    if not is_complete(release_dir):
        raise ReleaseError(f"release {release_id} is incomplete ({release_dir}): its build or copy did not finish",
                           hint="build or ship it again")
    if record is not None and record.status is Status.FAILED:
        raise ReleaseError(f"release {release_id} failed ({record.reason or 'see `nextdeploy releases`'}) and is "
                           "never put live again", hint="deploy a new release")
    if record is None:  # complete, put here by another program (a fleet controller's copy): logged as built
        ctx.log.append("built", release_id, revision=(read_manifest(release_dir) or {}).get("revision"))


__all__ = ["ActivateResult", "HostResult", "HostStatus", "StartResult", "StopResult", "activate_release",
           "host_status", "rollback", "start", "stop"]
