"""Fault-injection checkpoints, so tests can SIGKILL a deploy at an exact step.

``NEXTDEPLOY_TEST_PAUSE_AT=<name>`` makes the run print ``nextdeploy: paused at <name>`` to stderr
and sleep at that checkpoint until killed. Unset (always, in production) a checkpoint does nothing.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "NEXTDEPLOY_TEST_PAUSE_AT"
CHECKPOINTS = ("mid-copy", "assembled", "switched")


def checkpoint(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        print(f"nextdeploy: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(3600)
