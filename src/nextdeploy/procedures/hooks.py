"""Running the release hooks of a deploy (``[hooks]``; what runs is decided in ``plans/hooks.py``).

Output goes to the terminal, each line after ``[<event>]``, and to the release's build log
(``logs/build-<id>.log``: the deploy's log).
"""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.context import Context
from nextdeploy.core.errors import HookError
from nextdeploy.core.steps import StepName
from nextdeploy.plans.hooks import HookEvent, hook_command, hook_env, hook_op
from nextdeploy.plans.ops import Run

# The longest error text handed to ``on_failure`` (a build's error can carry a long log tail).
ERROR_CHARS = 2000


def hook_ops(ctx: Context, event: HookEvent, release: str, previous: str | None, revision: str | None, cwd: Path,
             error: str | None = None) -> list[Run]:
    """The hook of ``event`` as ops, none when it is not configured: what ``run_hook`` runs, and what the dry
    run prints (with the cwd and revision it predicts)."""
    command = hook_command(ctx.config, event)
    if command is None:
        return []
    env = hook_env(ctx.config, event, release, ctx.paths.release_dir(release), previous, revision,
                   error=error[:ERROR_CHARS] if error is not None else None)
    return [hook_op(ctx.config, event, command, cwd, env, ctx.paths.build_log(release))]


def run_hook(ctx: Context, event: HookEvent, release: str, previous: str | None, revision: str | None,
             error: str | None = None) -> str | None:
    """Run the hook of ``event`` if one is configured; returns what went wrong, or None (also: no hook)."""
    paths = ctx.paths
    release_dir = paths.release_dir(release)
    # In the release's app dir (where server.js is) once it exists; a build that failed has none.
    cwd = next((d for d in (release_dir / ctx.config.app.path, release_dir) if d.is_dir()), paths.root)
    ops = hook_ops(ctx, event, release, previous, revision, cwd, error)
    if not ops:
        return None
    with ctx.reporter.step(f"hook {event}", StepName.HOOK) as step:
        result = step.check(ctx.executor.apply(ops[0]))
        if result.timed_out:
            problem = f"the {event} hook was still running after {ctx.config.hooks.timeout:g} s and was killed " \
                      "with everything it started"
        elif not result.ok:
            problem = f"the {event} hook failed (exit {result.returncode})"
        else:
            return None
        if event == "before_activate":
            raise HookError(f"{problem}: release {release} rejected; nothing live changed",
                            hint=f"its output is above and in {paths.build_log(release)}; fix the command (or raise "
                                 "[hooks] timeout), then deploy again")
    return problem
