"""The one failure path of an activation (activation/failure.py): the put-back runs first, the failure is logged
once it is over (not when it is interrupted), and the error says what is live. The put-backs themselves run
real PM2: tests/integration (test_activation, test_crash_safety, test_basepath)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextdeploy.activation import failure
from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ActivationError, Interrupted, Pm2Error, PreflightError, RollbackError
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor


def _context(tmp_path: Path) -> Context:
    config = parse_config({"app": {"name": "hello", "source": str(tmp_path / "app")},
                           "server": {"root": str(tmp_path / "root")}}, tmp_path)
    config.root.mkdir(parents=True)
    return Context(config, LocalExecutor(echo=lambda line: None), Reporter(force_plain=True))


def _events(ctx: Context) -> list[tuple[str, str]]:
    return [(event["event"], event["release"]) for event in ctx.log.events()]


def test_a_release_failing_after_the_switch_is_put_back_then_logged_failed_then_raised(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    done: list[str] = []

    def put_back() -> None:
        assert _events(ctx) == []  # not logged failed before the put-back is over
        done.append("put back")
        ctx.log.append("rolled_back", "R1", **{"from": "R2"})

    with pytest.raises(ActivationError) as raised:
        failure.after_switch(ctx, Pm2Error("worker 2 is errored", details=["pm2 said"]), "R2", "R1", put_back,
                             details=lambda: [*done, "the log"])
    assert raised.value.message == "release R2 failed after the switch (worker 2 is errored); rolled back to R1"
    assert raised.value.details == ["pm2 said", "put back", "the log"]  # the workers' log read after it
    assert _events(ctx) == [("rolled_back", "R1"), ("failed", "R2")]
    assert ctx.log.events()[-1]["reason"] == "after the switch: worker 2 is errored"


def test_an_interrupt_after_the_switch_says_what_is_live_and_a_failed_put_back_is_still_logged(
        tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(Interrupted) as interrupted:
        failure.after_switch(ctx, Interrupted("SIGTERM"), "R2", None, lambda: None, details=list, event="refused")
    assert interrupted.value.message == "interrupted by SIGTERM while activating R2; the app was stopped (no earlier " \
                                        "release)"
    assert _events(ctx) == [("refused", "R2")]

    def cannot() -> None:
        raise RollbackError("the rollback to R1 failed too")

    with pytest.raises(RollbackError):
        failure.after_switch(ctx, Pm2Error("boom"), "R3", "R1", cannot, details=list)
    assert _events(ctx)[-1] == ("failed", "R3")

    def killed() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed during the put-back: left pending for the recovery
        failure.after_switch(ctx, Pm2Error("boom"), "R4", "R1", killed, details=list)
    assert ("failed", "R4") not in _events(ctx)


def test_a_release_rejected_before_traffic_keeps_its_own_error_or_says_it_was_rejected(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    rejected: list[str] = []
    window = PreflightError("a new worker (PM2 id 2) exited with code 1", details=["its output"])
    with pytest.raises(PreflightError) as raised:
        failure.before_traffic(ctx, window, "R2", "R1", lambda: rejected.append("R2"), details=lambda: ["log"])
    assert raised.value is window and raised.value.details == ["log", "its output"] and rejected == ["R2"]
    assert ctx.log.events()[-1]["reason"] == "preflight: a new worker (PM2 id 2) exited with code 1"

    with pytest.raises(PreflightError) as raised:
        failure.before_traffic(ctx, Pm2Error("PM2 did not answer"), "R3", "R1", lambda: None, details=lambda: ["log"])
    assert raised.value.message == "release R3 was rejected before taking traffic: PM2 did not answer"
    assert raised.value.hint == "see `nextdeploy logs`; the old release is still serving"
    assert _events(ctx)[-2:] == [("failed", "R2"), ("failed", "R3")]


def test_a_rollback_target_rejected_before_traffic_is_refused_not_failed(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(RollbackError) as raised:
        failure.before_traffic(ctx, PreflightError("not healthy"), "R1", "R2", lambda: None, details=lambda: ["log"],
                               rollback=True)
    assert raised.value.message == ("rollback to R1 refused: it failed its checks before taking traffic (not healthy); "
                                    "nothing live changed, R2 served throughout")
    assert _events(ctx) == [("refused", "R1")]
    with pytest.raises(Interrupted) as interrupted:
        failure.before_traffic(ctx, KeyboardInterrupt(), "R3", "R2", lambda: None, details=list)
    assert interrupted.value.signal_name == "SIGINT" and interrupted.value.message == (
        "interrupted by SIGINT while release R3 was held off the public port; its workers were deleted, R2 served "
        "throughout")
