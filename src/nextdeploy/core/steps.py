"""Stable names of the steps a command reports, whatever their human titles say.

A step is shown with a title (``switch current -> 20261121-...``) and carries one of these names. The
names are what scripts and the bench read: ``--json`` progress lines on stderr are tagged with them
(``... [switch] switch current -> <id>``) and the ``--json`` result's ``steps`` list gives them, so a
title can change freely; a name is a contract. Pure: no imports from the rest of nextdeploy.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final


class StepName(StrEnum):
    # Build, beside the live release.
    EXPORT = "export"  # copy or check out the source into a build dir
    INSTALL = "install"  # install dependencies (or reuse the last build's)
    INSTALL_TOOL = "install-tool"  # install the package manager the app pins, with npm (once)
    BUILD = "build"  # next build
    ASSEMBLE = "assemble"  # assemble the release dir
    HOOK = "hook"  # a user hook (before_activate, after_activate...)
    BRIDGE_ASSETS = "bridge-assets"  # keep serving earlier releases' static assets
    # Proving the new release healthy before it takes traffic (the stability window).
    PREFLIGHT = "preflight"  # the health gate on a private port, outside PM2
    HELD = "held"  # the held cut-over: new workers under PM2, held off the public port
    # Moving traffic.
    SWITCH = "switch"  # the `current` symlink moves
    CUTOVER = "cutover"  # the held workers are approved and take the traffic
    START = "start"  # start workers (nothing ran), or `pm2 start`
    RELOAD = "reload"  # reload workers (`pm2 reload`)
    RESTART = "restart"  # `pm2 restart` (a baseline of the bench)
    VERIFY = "verify"  # every worker runs the new release and answers (or a baseline's health check)
    SAVE = "save"  # `pm2 save` as its own step (a baseline of the bench)
    # Undoing and repairing.
    ROLLBACK = "rollback"  # put the previous release back
    REJECT = "reject"  # delete a rejected release's held workers
    STOP = "stop"  # remove the app from PM2
    STOP_LOST = "stop-lost"  # stop workers PM2 lost track of
    STOP_LEFTOVERS = "stop-leftovers"  # stop the build or preflight processes an interrupted deploy left
    RECOVER = "recover"  # repair an interrupted activation
    RECOVER_HELD = "recover-held"  # delete the held workers an interrupted held cut-over left
    RESTART_LIVE = "restart-live"  # serve the live release again before a deploy (PM2 had lost it)
    START_LIVE = "start-live"  # `nextdeploy start`
    RESTORE = "restore"  # the bench's repair of a baseline
    RETAIN = "retain"  # remove releases beyond [releases] keep
    CONVERGE = "converge"  # a fleet found on mixed releases: the other hosts put on one release
    # A fleet deploy's phases on the controller (fleet/deploy.py)
    FLEET_SETUP = "fleet-setup"  # nextdeploy and pm2 on every host (a check when they are there)
    FLEET_CONFIG = "fleet-config"  # the fleet's config sent to every host
    FLEET_STATUS = "fleet-status"  # every host's live release read
    FLEET_BUILD = "fleet-build"  # the source sent to the [build] host, the release built there and pulled
    FLEET_SHIP = "fleet-ship"  # the release shipped to every host
    FLEET_PREPARE = "fleet-prepare"  # the key given and the release prepared on every host


# A tagged progress line's tag: ``[name] `` right after ``... ``, ``ok `` or ``FAILED ``.
TAG: Final = re.compile(r"^\[(?P<name>[a-z][a-z-]*)\] ")


def tagged(name: StepName | None, title: str) -> str:
    """``title`` with its step name in front, as ``--json`` progress lines show it."""
    return title if name is None else f"[{name.value}] {title}"


def untag(text: str) -> tuple[str | None, str]:
    """``(name, title)`` of a tagged title (``name`` None when untagged or not a known step)."""
    found = TAG.match(text)
    if found is None or found["name"] not in _VALUES:
        return None, text
    return found["name"], text[found.end():]


def untag_line(line: str) -> str:
    """A ``--json`` progress line as a person reads it: ``ok  [build] build the app (3.0 s)`` ->
    ``ok  build the app (3.0 s)``; any other line unchanged."""
    found = _TAGGED_LINE.match(line)
    if found is None or found["name"] not in _VALUES:
        return line
    return found["mark"] + line[found.end():]


_VALUES: Final = frozenset(step.value for step in StepName)
_TAGGED_LINE: Final = re.compile(r"^(?P<mark>\.\.\. |ok  |FAILED )\[(?P<name>[a-z][a-z-]*)\] ")
