"""Release hooks (``[hooks]``): what runs, where, with which environment. Pure; the deploy runs the ops.

``before_activate`` runs once per deploy in the new release, after its assembly and before any traffic
moves (a database migration); a failure rejects the release. ``after_activate`` runs once after a
successful activation (a notification); a failure is a warning. ``on_failure`` runs once after a
rejected or reverted deploy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from nextdeploy.core.config import Config
from nextdeploy.plans.ops import Run

HookEvent = Literal["before_activate", "after_activate", "on_failure"]
HOOK_EVENTS: tuple[HookEvent, ...] = ("before_activate", "after_activate", "on_failure")


def hook_command(config: Config, event: HookEvent) -> str | None:
    """The shell command configured for ``event``, or None."""
    command: str | None = getattr(config.hooks, event)
    return command


def hook_env(config: Config, event: HookEvent, release: str, release_dir: Path, previous: str | None,
             revision: str | None, error: str | None = None, hosts: tuple[str, ...] = ()) -> dict[str, str]:
    """The release's runtime env (``[server] env``, ``NODE_ENV``) and the facts of the deploy as
    ``NEXTDEPLOY_*`` variables. The Server Actions key is not in it: a hook has no use for it."""
    env = {
        **config.server.env,
        "NODE_ENV": "production",
        "NEXTDEPLOY_EVENT": event,
        "NEXTDEPLOY_APP": config.app.name,
        "NEXTDEPLOY_RELEASE": release,
        "NEXTDEPLOY_RELEASE_DIR": str(release_dir),
        "NEXTDEPLOY_PREVIOUS_RELEASE": previous or "",
        "NEXTDEPLOY_REVISION": revision or "",
        "NEXTDEPLOY_ROOT": str(config.root),
        "NEXTDEPLOY_HOSTS": " ".join(hosts),
    }
    if error is not None:
        env["NEXTDEPLOY_ERROR"] = error
    return env


def hook_op(config: Config, event: HookEvent, command: str, cwd: Path, env: dict[str, str],
            log_file: Path) -> Run:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd``: its output is echoed with the event as a prefix and
    appended to ``log_file``; past ``[hooks] timeout`` it is killed with everything it started. The values of
    ``[server] env`` never reach a printed command."""
    return Run(("/bin/sh", "-c", command), cwd=cwd, env=env, log_file=log_file, timeout=config.hooks.timeout,
               secret_env=frozenset(config.server.env), echo_prefix=f"[{event}] ")
