"""The one failure path of an activation: put the previous release back, log the failure, raise.

Every way a release can fail on its way live ends here: ``activate`` (switch, reload, verify) and the held
cut-over after its approval undo the switch (``after_switch``), the held cut-over before its approval deletes
the held workers (``before_traffic``), the recovery of a killed run repairs its activation
(``failed_once_put_back``). The undoing itself is the caller's (``activate.put_back``, ``held.put_back_held``,
``held._reject``, ``recovery.repair_activation``): it is given here as a function, run first, then the
failure is logged and the error raised, saying what is live now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from nextdeploy.activation.window import STILL_SERVING
from nextdeploy.core.context import Context
from nextdeploy.core.errors import (
    ActivationError,
    GateAborted,
    Interrupted,
    NextdeployError,
    PreflightError,
    RollbackError,
    stopped_by,
)


@contextmanager
def failed_once_put_back(ctx: Context, release_id: str, reason: str, event: str = "failed") -> Iterator[None]:
    """Log ``release_id`` as failed once the put-back in the block is over, or has failed. Not when it is
    killed or interrupted: the switch then stays pending in the log, and the next run's recovery puts
    the previous release back (logged first, the failed release left in ``current`` would pass for live).
    ``event`` "refused": a rollback target that failed its check (it served well before: not sticky)."""
    try:
        yield
    except NextdeployError:
        ctx.log.append(event, release_id, reason=reason)
        raise
    ctx.log.append(event, release_id, reason=reason)


def after_switch(ctx: Context, exc: NextdeployError | KeyboardInterrupt, release_id: str, previous: str | None,
                 put_back: Callable[[], None], details: Callable[[], list[str]], event: str = "failed") -> NoReturn:
    """``release_id`` failed (or was interrupted: Ctrl-C, SIGTERM, SIGHUP) after ``current`` switched to it: it
    was never verified. ``put_back`` puts ``previous`` back (raises RollbackError if it cannot), then this
    raises Interrupted or ActivationError; ``details``: what the workers wrote, read after the put-back."""
    signal_name = stopped_by(exc) if isinstance(exc, KeyboardInterrupt) else None
    reason = f"interrupted by {signal_name}" if signal_name else str(exc)
    with failed_once_put_back(ctx, release_id, f"after the switch: {reason}", event=event):
        put_back()
    outcome = f"rolled back to {previous}" if previous else "the app was stopped (no earlier release)"
    if signal_name:
        raise Interrupted(signal_name, f"{reason} while activating {release_id}; {outcome}") from None
    assert isinstance(exc, NextdeployError)
    raise ActivationError(f"release {release_id} failed after the switch ({exc.message}); {outcome}",
                          hint="see `nextdeploy logs` for the workers' output",
                          details=exc.details + details()) from None


def before_traffic(ctx: Context, exc: NextdeployError | KeyboardInterrupt, release_id: str, previous: str | None,
                   reject: Callable[[], None], details: Callable[[], list[str]], rollback: bool = False) -> NoReturn:
    """``release_id``'s held workers failed their window (or it was interrupted) before taking a request:
    ``reject`` deletes them while ``previous`` serves on, then this raises Interrupted, PreflightError, or
    (``rollback``: ``release_id`` is an earlier good release, refused, not failed) RollbackError."""
    if isinstance(exc, KeyboardInterrupt):
        signal_name: str | None = stopped_by(exc)
        message = f"interrupted by {signal_name}"
    else:
        signal_name, message = None, exc.message
    aborted = isinstance(exc, GateAborted)  # proven, then not switched to: it did not fail
    event = "refused" if rollback or aborted else "failed"
    with failed_once_put_back(ctx, release_id, f"{'gate' if aborted else 'preflight'}: {message}", event=event):
        reject()
    if aborted:
        assert isinstance(exc, GateAborted)
        exc.message = f"{exc.message}; its held workers were deleted, {previous} served throughout"
        raise exc
    if signal_name:
        raise Interrupted(signal_name, f"{message} while release {release_id} was held off the public port; "
                                       f"its workers were deleted, {previous} served throughout") from None
    assert isinstance(exc, NextdeployError)
    if rollback:
        raise RollbackError(
            f"rollback to {release_id} refused: it failed its checks before taking traffic ({exc.message}); "
            f"nothing live changed, {previous} served throughout",
            hint="see `nextdeploy logs`; `nextdeploy rollback --to ID` picks another release",
            details=details() + exc.details,
        ) from None
    if isinstance(exc, PreflightError):
        exc.details = details() + exc.details
        raise exc
    raise PreflightError(f"release {release_id} was rejected before taking traffic: {exc.message}",
                         hint=f"see `nextdeploy logs`; {STILL_SERVING}",
                         details=exc.details + details()) from None
