"""Rollback: put an earlier good release back, without rebuilding, checked before traffic moves to it.

    rollback = live lock: recover, then the held cut-over back to the target (its workers checked beside the
               live ones before they take traffic), or a preflight then switch back, reload; verify, save
               (never waits for a build)
"""

from __future__ import annotations

import time

from nextdeploy.activation.activate import activate, current_release, release_only_change, settle
from nextdeploy.activation.held import activate_held, approve
from nextdeploy.activation.preflight import run_preflight
from nextdeploy.core.context import Context
from nextdeploy.core.errors import PreflightError, ReleaseNotFoundError, RollbackError
from nextdeploy.core.manifest import holds_until_approved, is_complete, layout_of
from nextdeploy.core.releaselog import ReleaseRecord
from nextdeploy.core.retention import rollback_target
from nextdeploy.core.steps import StepName
from nextdeploy.host.probe import listen_port
from nextdeploy.host.tools import require_tool
from nextdeploy.nextjs.prepare import check_node
from nextdeploy.nextjs.skew import bridge_static_assets
from nextdeploy.plans.runtime import runtime_env
from nextdeploy.procedures.deploy import DeployResult
from nextdeploy.procedures.lifecycle import changing_live_state
from nextdeploy.release.secrets import secret_values


def rollback(ctx: Context, to: str | None = None, lock_timeout: float = 0.0) -> DeployResult:
    """Put an earlier good release back, without rebuilding."""
    started = time.monotonic()
    with changing_live_state(ctx, "nextdeploy rollback", lock_timeout) as pm2:
        records = ctx.log.records()
        current = current_release(ctx)
        target = to or rollback_target(records, current)
        _check_rollback_target(ctx, records, target, current)
        assert target is not None
        layout = layout_of(ctx.paths.release_dir(target))
        if layout is not None:
            check_node(layout)
        bridge_static_assets(ctx, target)
        try:
            # Checked before traffic moves to it, as it was when it first went live (its recorded checks): by
            # the held cut-over when nothing but the release changes, else by a preflight outside PM2.
            held_ids = release_only_change(ctx, pm2) if holds_until_approved(ctx.paths.release_dir(target)) else None
            if held_ids and current is not None:
                report = activate_held(ctx, pm2, target, current, held_ids, rollback=True)
            else:
                _preflight_rollback_target(ctx, target, current)
                approve(ctx, target, again=True)  # an earlier check taken back by a killed run
                report = activate(ctx, pm2, target, current, event="rolled_back")
        finally:
            settle(ctx)
    return DeployResult(target, current, time.monotonic() - started, report.seconds)


def _preflight_rollback_target(ctx: Context, target: str, current: str | None) -> None:
    """Raise RollbackError, with nothing live changed, if ``target`` fails the preflight outside PM2."""
    layout = layout_of(ctx.paths.release_dir(target))
    if layout is None:
        return
    env = runtime_env(ctx.config, listen_port(), "127.0.0.1", secret_values(ctx.paths) or {})
    with ctx.reporter.step(f"check {target} before traffic moves: health gate on a private port", StepName.PREFLIGHT):
        try:
            run_preflight(ctx.config, layout, require_tool("node"), env, ctx.paths.preflight_log(target))
        except PreflightError as exc:
            ctx.log.append("refused", target, reason=f"rollback check: {exc.message}")
            raise RollbackError(
                f"rollback to {target} refused: it failed its checks before taking traffic ({exc.message}); "
                f"nothing live changed{f', {current} still serves' if current else ''}",
                hint="see the server output above; `nextdeploy rollback --to ID` picks another release",
                details=exc.details) from None


def _check_rollback_target(ctx: Context, records: list[ReleaseRecord], target: str | None,
                           current: str | None) -> None:
    if target is None:
        raise RollbackError("there is no earlier good release to roll back to",
                            hint="see `nextdeploy releases`; failed and unfinished releases are never used")
    record = next((r for r in records if r.id == target), None)
    if record is None or not ctx.paths.release_dir(target).is_dir():
        raise ReleaseNotFoundError(f"no release {target!r} in {ctx.paths.releases_dir}",
                                   hint="pick an id from `nextdeploy releases`")
    if target == current:
        raise RollbackError(f"release {target} is already live", hint="pick another id from `nextdeploy releases`")
    if not record.usable or not is_complete(ctx.paths.release_dir(target)):
        raise RollbackError(
            f"release {target} is {record.status.value} and cannot be rolled back to",
            hint="only releases that were live and healthy can be; see `nextdeploy releases`",
        )
