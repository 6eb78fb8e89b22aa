"""Progress lines: a step says FAILED when it raised or when its command failed, never ``ok``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nextdeploy.core.ui import Reporter


@dataclass
class Result:
    ok: bool


def plain_reporter() -> tuple[Reporter, list[str]]:
    printed: list[str] = []
    reporter = Reporter(force_plain=True)
    reporter._line = printed.append  # type: ignore[method-assign]
    return reporter, printed


def test_a_step_whose_command_failed_says_failed_even_when_the_error_comes_after_it() -> None:
    reporter, printed = plain_reporter()
    with reporter.step("build the app (next build)") as step:
        assert step.check(Result(ok=False)) == Result(ok=False)
    with reporter.step("install dependencies") as step:
        step.check(Result(ok=True))
    with pytest.raises(RuntimeError), reporter.step("assemble the release"):
        raise RuntimeError("boom")
    assert [line.rsplit(" (", 1)[0] for line in printed[1::2]] == [
        "FAILED build the app (next build)", "ok  install dependencies", "FAILED assemble the release"]
    assert [timing.ok for timing in reporter.timings] == [False, True, False]
