"""``nextdeploy host prepare ID``: a release a fleet controller shipped under ``releases/``, made ready here
before any host switches: checked complete and runnable by this host's Node, its links into the root made
for this host's root (the controller built it under another root: its shared files and the image cache
link into ``<this root>/shared``), and logged ``built``. Changes nothing live."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nextdeploy.core.context import Context
from nextdeploy.core.errors import ReleaseError, ReleaseNotFoundError
from nextdeploy.core.manifest import is_complete, layout_of, read_manifest
from nextdeploy.core.releaselog import Status
from nextdeploy.nextjs import caches
from nextdeploy.nextjs.prepare import check_node
from nextdeploy.plans.release import shared_link_ops
from nextdeploy.release.builder import prepare_root


@dataclass
class PrepareResult:
    release: str
    linked: list[str]  # the shared files linked into it
    logged: bool  # first seen here: logged as built
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "linked": self.linked, "logged": self.logged,
                "seconds": round(self.seconds, 3)}


def prepare_shipped(ctx: Context, release_id: str) -> PrepareResult:
    """Check and finish a shipped release (see the module's doc); raises ReleaseNotFoundError or ReleaseError,
    with nothing live changed, for a release that is missing, incomplete, failed or not runnable here."""
    started = time.monotonic()
    prepare_root(ctx)
    paths, config = ctx.paths, ctx.config
    release_dir = paths.release_dir(release_id)
    records = {record.id: record for record in ctx.log.records()}
    record = records.get(release_id)
    if not release_dir.is_dir():
        raise ReleaseNotFoundError(f"no release {release_id!r} in {paths.releases_dir}",
                                   hint="ship it again: run the deploy again")
    layout = layout_of(release_dir)
    if layout is None or not is_complete(release_dir):
        raise ReleaseError(f"release {release_id} is incomplete ({release_dir}): its copy did not finish",
                           hint="run the deploy again: the ship resumes from what arrived")
    if record is not None and record.status is Status.FAILED:
        raise ReleaseError(f"release {release_id} failed here before ({record.reason or 'see `nextdeploy releases`'})"
                           " and is never put live again", hint="deploy a new release")
    check_node(layout)
    present = {name for name in config.release.shared_files if (paths.shared_dir / name).exists()}
    ops = shared_link_ops(paths.shared_dir, config.release.shared_files, present, layout)
    if config.release.share_image_cache:
        ops += caches.image_cache_ops(paths.shared_dir, layout)
    ctx.executor.apply_all(ops)
    if record is None:
        ctx.log.append("built", release_id, revision=(read_manifest(release_dir) or {}).get("revision"))
    return PrepareResult(release_id, sorted(present), record is None, time.monotonic() - started)
