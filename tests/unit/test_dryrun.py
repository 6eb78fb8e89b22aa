"""``deploy --dry-run`` decides as the deploy does: with the deploy's own functions, on the same state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.steps import StepName
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import DryRunExecutor, LocalExecutor
from nextdeploy.plans.ops import Rename
from nextdeploy.procedures.dryrun import deploy_plan
from nextdeploy.procedures.retention import retain


def _host(tmp_path: Path, releases: list[str], keep: int) -> Context:
    """A deploy root with ``releases`` built and activated in turn (the last one live)."""
    config = parse_config({"app": {"name": "hello", "source": str(tmp_path / "app")},
                           "server": {"root": str(tmp_path / "root")}, "releases": {"keep": keep}}, tmp_path)
    ctx = Context(config, LocalExecutor(), Reporter(force_plain=True))
    for release_id in releases:
        ctx.paths.release_dir(release_id).mkdir(parents=True)
        ctx.paths.logs_dir.mkdir(exist_ok=True)
        ctx.paths.build_log(release_id).write_text("built\n")
        for event in ("building", "built", "activated"):
            ctx.log.append(event, release_id)
    os.symlink(f"releases/{releases[-1]}", ctx.paths.current_link)
    return ctx


def _planned_removals(ctx: Context, release_id: str) -> tuple[list[str], list[str]]:
    """The releases the dry run says retention moves away, and the step names of its plan."""
    lines: list[str] = []
    plan = deploy_plan(Context(ctx.config, DryRunExecutor(lines.append), ctx.reporter), release_id)
    moved = [op.src.name for step in plan for op in step.ops
             if isinstance(op, Rename) and op.src.parent == ctx.paths.releases_dir]
    return moved, [name for step in plan for name in step.names]


def test_the_dry_run_removes_what_retention_will_remove_once_the_new_release_is_live(tmp_path: Path) -> None:
    ctx = _host(tmp_path, ["r1", "r2", "r3", "r4"], keep=3)
    log_before = ctx.paths.log_file.read_text()
    moved, names = _planned_removals(ctx, "r5")
    assert names[-1] == StepName.RETAIN and names.count(StepName.RETAIN) == 1
    assert ctx.paths.log_file.read_text() == log_before and not ctx.paths.trash_dir.exists()

    # The deploy of r5, as far as retention sees it: built, live, then retained.
    ctx.paths.release_dir("r5").mkdir()
    for event in ("building", "built", "activated"):
        ctx.log.append(event, "r5")
    ctx.paths.current_link.unlink()
    os.symlink("releases/r5", ctx.paths.current_link)
    removed = retain(ctx)
    assert removed == moved == ["r1", "r2"]
    assert sorted(path.name for path in ctx.paths.trash_dir.iterdir()) == ["r1", "r2"]
    assert (ctx.paths.trash_dir / "r1" / "build-r1.log").read_text() == "built\n"
    assert [json.loads(line)["event"] for line in ctx.paths.log_file.read_text().splitlines()][-2:] == [
        "removed", "removed"]


def test_no_retention_step_while_the_releases_fit(tmp_path: Path) -> None:
    ctx = _host(tmp_path, ["r1", "r2"], keep=3)
    moved, names = _planned_removals(ctx, "r3")
    assert moved == [] and StepName.RETAIN not in names
    # Without a daemon there is no held cut-over: preflight, then a reload of the live workers.
    assert names[-4:] == [StepName.PREFLIGHT, StepName.SWITCH, StepName.RELOAD, StepName.VERIFY]
