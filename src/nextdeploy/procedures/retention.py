"""Retention: releases beyond ``[releases] keep`` go to ``trash/`` at the end of a deploy, and are deleted
during the next deploy's build."""

from __future__ import annotations

import threading

from nextdeploy.activation.activate import current_release
from nextdeploy.core.context import Context
from nextdeploy.core.releaselog import ReleaseRecord
from nextdeploy.core.retention import releases_to_remove
from nextdeploy.core.steps import StepName
from nextdeploy.host.files import remove_in_background
from nextdeploy.plans.ops import MakeDirs, Op, Rename


def retain(ctx: Context) -> list[str]:
    """Remove releases beyond ``[releases] keep`` (never the live one or the rollback target), and their build
    and preflight logs.

    Each is renamed into ``trash/`` (atomic: a run killed here never leaves half a release that still
    looks complete), and deleted during the next deploy's build (``sweep_trash``): deleting its ~1,200
    files took 0.1-0.2 s of a deploy under the bench's load."""
    doomed = to_retire(ctx, ctx.log.records(), current_release(ctx))
    if doomed:
        with ctx.reporter.step(retire_title(doomed), StepName.RETAIN):
            for release_id in doomed:
                ctx.executor.apply_all(retire_ops(ctx, release_id))
                ctx.log.append("removed", release_id)
    return doomed


def to_retire(ctx: Context, records: list[ReleaseRecord], current: str | None,
              also_on_disk: frozenset[str] = frozenset()) -> list[str]:
    """The releases retention removes with ``current`` live: ``also_on_disk`` counts as on disk (the dry
    run's new release)."""
    releases_dir = ctx.paths.releases_dir
    on_disk = {path.name for path in releases_dir.iterdir() if path.is_dir()} if releases_dir.is_dir() else set()
    return releases_to_remove(records, on_disk | also_on_disk, current, ctx.config.releases.keep)


def retire_title(doomed: list[str]) -> str:
    return f"remove {len(doomed)} old release{'s' if len(doomed) > 1 else ''}"


def retire_ops(ctx: Context, release_id: str) -> list[Op]:
    """A release into ``trash/``, its build and preflight logs with it."""
    paths = ctx.paths
    moved = paths.trash_dir / release_id
    return [MakeDirs(paths.trash_dir), Rename(paths.release_dir(release_id), moved),
            *(Rename(log, moved / log.name) for log in (paths.build_log(release_id), paths.preflight_log(release_id))
              if log.is_file())]


def sweep_trash(ctx: Context) -> threading.Thread | None:
    """Start deleting what retention moved to ``trash/`` (see ``retain``); None when there is nothing."""
    trash = ctx.paths.trash_dir
    return remove_in_background(trash) if trash.is_dir() else None
