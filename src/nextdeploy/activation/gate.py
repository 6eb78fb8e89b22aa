"""The gate of ``nextdeploy host activate --gate``: a fleet's controller holds the moment traffic would move.

The activation runs up to that moment (the held cut-over: workers booted held, the stability window passed;
the preflight path: the preflight passed, nothing switched), then calls ``ctx.gate(release_id)``. The gate
here says ``nextdeploy: gate <id> ready`` on stderr and reads one line on stdin: ``go`` returns (the
activation goes on: cut over, verify, retention); ``abort``, end of file (the controller died, the ssh link
dropped), anything else, or no line within ``GATE_TIMEOUT`` raise ``GateAborted``. The activation then
rejects the release before traffic: its held workers are deleted, the live release serves on, and the
release is logged ``refused`` (it did not fail: it may go live later), exit 21.

So a fleet proves the release on every host before any host switches (``fleet.gated``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import IO

from nextdeploy.core.context import Context
from nextdeploy.core.errors import GateAborted

GATE_TIMEOUT = 900.0  # seconds a proven release waits at the gate for the controller's word
GO, ABORT = "go", "abort"


def ready_line(release_id: str) -> str:
    """The line on stderr that tells the controller ``release_id`` is proven and waits at the gate."""
    return f"nextdeploy: gate {release_id} ready"


def stdin_gate(stdin: IO[bytes] | None = None, stderr: IO[str] | None = None,
               timeout: float = GATE_TIMEOUT) -> Callable[[str], None]:
    """The gate that asks the controller over this process's stdin and stderr (see the module's doc)."""

    def gate(release_id: str) -> None:
        err = stderr or sys.stderr
        print(ready_line(release_id), file=err, flush=True)
        word = _read_line(stdin or sys.stdin.buffer, timeout)
        if word == GO:
            return
        if word is None:
            said = f"no word from the controller within {timeout:g} s"
        elif word == "":
            said = "the controller went away (end of input)"
        else:
            said = "the controller said abort" if word == ABORT else f"the controller said {word!r}, not go"
        raise GateAborted(f"release {release_id} was proven but not switched to: {said}",
                          hint="nothing to fix here: the fleet's deploy stopped elsewhere; deploy again")

    return gate


def _read_line(stream: IO[bytes], timeout: float) -> str | None:
    """One line of ``stream``, stripped ("" at end of file), or None when none came within ``timeout``."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True, name="gate")
    reader.start()
    reader.join(timeout)
    if not got:
        return None
    return got[0].decode(errors="replace").strip()


def pass_gate(ctx: Context, release_id: str) -> None:
    """``ctx.gate(release_id)`` when there is a gate, where nothing was switched yet and nothing is held
    (the preflight path): an abort is logged ``refused`` (not failed) and raised."""
    if ctx.gate is None:
        return
    try:
        ctx.gate(release_id)
    except GateAborted as exc:
        ctx.log.append("refused", release_id, reason=f"gate: {exc.message}")
        raise
