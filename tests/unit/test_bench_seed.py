"""The seed script's procedure as the bench runs it: its health loop and its mtime-based choices, bugs kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nextdeploy.benchkit.baselines import (
    newest_other_by_mtime,
    older_than_newest_by_mtime,
    seed_health_loop,
    seed_health_ok,
)
from nextdeploy.host.probe import ProbeResult


def answers(*results: bool) -> tuple[list[float], Callable[[], bool]]:
    """A list that records the loop's sleeps, and a probe giving ``results`` in order."""
    queue = list(results)
    return [], lambda: queue.pop(0)


def test_health_loop_passes_on_an_early_success() -> None:
    sleeps, probe = answers(False, False, True)
    roll_back, tries = seed_health_loop(probe, sleeps.append, max_retries=30, interval=2)
    assert (roll_back, tries) == (False, 3)
    assert sleeps == [2, 2]


def test_health_loop_rolls_back_after_every_try_failed() -> None:
    sleeps, probe = answers(*([False] * 5))
    assert seed_health_loop(probe, sleeps.append, max_retries=5, interval=2) == (True, 5)
    assert len(sleeps) == 5  # the script sleeps after its last failed try too


def test_health_loop_keeps_the_scripts_bug_a_success_on_the_last_try_still_rolls_back() -> None:
    sleeps, probe = answers(False, False, True)
    assert seed_health_loop(probe, sleeps.append, max_retries=3, interval=2) == (True, 3)


def test_health_check_is_a_grep_for_status_ok() -> None:
    assert seed_health_ok(ProbeResult(200, '{"status":"ok","version":"v1"}'))
    assert seed_health_ok(ProbeResult(500, '{"status":"ok"}'))  # grep ignores the status code
    assert not seed_health_ok(ProbeResult(500, '{"status":"broken"}'))
    assert not seed_health_ok(ProbeResult(None, "", "ConnectionRefusedError"))


def make_releases(root: Path, names_by_age: list[str]) -> Path:
    releases = root / "releases"
    releases.mkdir()
    for age, name in enumerate(names_by_age):
        (releases / name).mkdir()
        os.utime(releases / name, (1_000_000 + age, 1_000_000 + age))
    return releases


def test_rollback_target_is_the_newest_other_release_by_mtime_even_a_failed_one(tmp_path: Path) -> None:
    releases = make_releases(tmp_path, ["r1-good", "r2-good", "r3-crashed", "r4-new"])
    assert newest_other_by_mtime(releases, "r4-new") == "r3-crashed"


def test_cleanup_moves_all_but_the_five_newest_by_mtime_live_or_not(tmp_path: Path) -> None:
    releases = make_releases(tmp_path, [f"r{i}" for i in range(1, 8)])
    os.utime(releases / "r1", (2_000_000, 2_000_000))  # touched: now the newest
    assert older_than_newest_by_mtime(releases, keep=5) == ["r2", "r3"]
