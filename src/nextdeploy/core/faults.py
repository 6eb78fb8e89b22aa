"""Fault-injection checkpoints, so tests can SIGKILL a deploy at an exact step.

``NEXTDEPLOY_TEST_PAUSE_AT=<name>`` makes the run print ``nextdeploy: paused at <name>`` to stderr
and sleep at that checkpoint until killed, or until the file ``NEXTDEPLOY_TEST_RESUME_FILE`` names
exists. Unset (always, in production) a checkpoint does nothing.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "NEXTDEPLOY_TEST_PAUSE_AT"
RESUME_ENV = "NEXTDEPLOY_TEST_RESUME_FILE"
CHECKPOINTS = ("mid-copy", "assembled", "preflight", "switched", "held", "approved")


def checkpoint(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        print(f"nextdeploy: paused at {name}", file=sys.stderr, flush=True)
        resume = os.environ.get(RESUME_ENV)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline and not (resume and os.path.exists(resume)):
            time.sleep(0.1)
