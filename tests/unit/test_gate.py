"""The gate of ``host activate --gate`` on the fake PM2: a proven release waits for the controller's word.
``go``: the cut-over goes on as without a gate. ``abort``, end of input, a timeout: the held workers are
deleted, the old ones serve on untouched, the release is logged ``refused`` (not the sticky ``failed``: it
can go live later), GateAborted (exit 21). The preflight path (nothing held) the same, before the switch."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.unit.test_held_cutover import (
    assert_old_release_served_throughout,
    live_host,
    old_ids,
    serving_log,
    when,
)

from nextdeploy.activation.gate import ready_line, stdin_gate
from nextdeploy.activation.held import activate_held
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ExitCode, GateAborted
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.core.releaselog import Status
from nextdeploy.core.ui import Reporter
from nextdeploy.pm2.fake import Behaviour, FakeHost
from nextdeploy.procedures.deploy import put_live


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    with live_host(tmp_path) as fake:
        yield fake


def gated(host: FakeHost, stdin: bytes, timeout: float = 5.0) -> tuple[Context, io.StringIO]:
    said = io.StringIO()
    ctx = Context(host.config, host.executor, Reporter(force_plain=True))
    ctx.gate = stdin_gate(io.BytesIO(stdin), said, timeout=timeout)
    return ctx, said


def status_of(ctx: Context, release: str) -> Status:
    return next(record.status for record in ctx.log.records() if record.id == release)


def test_go_at_the_gate_cuts_over_once_the_window_passed(host: FakeHost) -> None:
    host.make_release("r2", Behaviour(boot=0.5))
    ctx, said = gated(host, b"go\n")
    asked: list[float] = []
    gate = ctx.gate
    assert gate is not None
    ctx.gate = lambda release: (asked.append(host.clock.now), gate(release))[1]
    activate_held(ctx, host.pm2, "r2", "r1", old_ids(host))
    assert said.getvalue() == ready_line("r2") + "\n"
    assert host.daemon.releases_serving() == ["r2", "r2"]
    # Asked after the window (the held workers answered), before the old workers were deleted.
    assert asked[0] >= min(when(host, "2 held") + when(host, "3 held")) + 3.0 - 0.01
    assert asked[0] <= min(when(host, "delete 0"))
    assert (ctx.log.events()[-1]["event"], status_of(ctx, "r2")) == ("activated", Status.ACTIVE)


@pytest.mark.parametrize(("stdin", "timeout", "said"), [
    (b"abort\n", 5.0, "the controller said abort"),
    (b"", 5.0, "the controller went away"),
    (b"maybe\n", 5.0, "said 'maybe', not go"),
], ids=["abort", "eof", "other"])
def test_anything_but_go_rejects_the_proven_release_without_failing_it(host: FakeHost, stdin: bytes, timeout: float,
                                                                      said: str) -> None:
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    seen = serving_log(host)
    host.make_release("r2", Behaviour(boot=0.5))
    ctx, _ = gated(host, stdin, timeout)
    with pytest.raises(GateAborted) as caught:
        activate_held(ctx, host.pm2, "r2", "r1", old_ids(host))
    assert caught.value.exit_code == ExitCode.ABORTED == 21
    assert said in caught.value.message and "r1 served throughout" in caught.value.message, caught.value.message
    assert_old_release_served_throughout(host, old, seen)
    assert ctx.log.events()[-1]["event"] == "refused"
    assert status_of(ctx, "r2") is not Status.FAILED  # not failed: it may go live later


def test_no_word_within_the_timeout_rejects_it() -> None:
    class Silent(io.RawIOBase):
        def readline(self, size: int | None = -1) -> bytes:
            import time
            time.sleep(2)
            return b"go\n"

    gate = stdin_gate(Silent(), io.StringIO(), timeout=0.2)  # type: ignore[arg-type]
    with pytest.raises(GateAborted, match=r"no word from the controller within 0\.2 s"):
        gate("r2")


def preflight_path(host: FakeHost, stdin: bytes) -> tuple[Context, Callable[[], object]]:
    """r2 approved already (preflighted by `host prepare`... or a config change): no held cut-over."""
    host.make_release("r2", Behaviour(boot=0.5), approved=True)
    ctx, _ = gated(host, stdin)
    layout = ReleaseLayout(ctx.paths.release_dir("r2"))
    return ctx, lambda: put_live(ctx, host.pm2, "r2", layout, "r1", {}, checked=True)


def test_the_preflight_path_waits_at_the_gate_before_the_switch(host: FakeHost) -> None:
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    ctx, run = preflight_path(host, b"abort\n")
    with pytest.raises(GateAborted):
        run()
    assert {w.pm_id: w.pid for w in host.pm2.workers("hello")} == old
    assert host.paths.current_link.readlink() == Path("releases/r1")
    assert ctx.log.events()[-1]["event"] == "refused"
    assert status_of(ctx, "r2") is not Status.FAILED


def test_the_preflight_path_goes_on_at_go(host: FakeHost) -> None:
    ctx, run = preflight_path(host, b"go\n")
    run()
    assert host.paths.current_link.readlink() == Path("releases/r2")
    assert status_of(ctx, "r2") is Status.ACTIVE
