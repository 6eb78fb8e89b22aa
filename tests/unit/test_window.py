"""The stability window's rule and the held cut-over's decisions in it, fed observations by hand (no PM2,
no clock): what is probed when, which failure says what, when the release is done or timed out."""

from __future__ import annotations

import pytest

from nextdeploy.activation.window import (
    LIST_POLL,
    POLL,
    REST_AFTER,
    WINDOW_POLL,
    HeldWindow,
    Next,
    StabilityWindow,
)
from nextdeploy.core.errors import PreflightError
from nextdeploy.pm2.client import Worker

OLD = frozenset({0, 1})


def worker(pm_id: int, pid: int, status: str = "online", restarts: int = 0, exit_code: int | None = None) -> Worker:
    return Worker(pm_id, pid, status, restarts, 0, None, exit_code=exit_code)


def old_and(*new: Worker) -> list[Worker]:
    return [worker(0, 100), worker(1, 101), *new]


def held_window(stable_for: float = 4.0, timeout: float = 10.0, instances: int = 2) -> HeldWindow:
    return HeldWindow(StabilityWindow(stable_for, timeout, started=0.0), OLD, instances)


def round_at(watch: HeldWindow, now: float, held: dict[int, int], workers: list[Worker] | None = None,
             healthy: bool = True) -> list[int]:
    """One round of the held cut-over's loop at ``now``; the ids of the workers it probed."""
    if watch.begin(now, held.keys()):
        assert workers is not None, "listed when not expected"
        watch.listed(workers)
    probed = []
    for new_worker, _port in watch.due(held):
        probed.append(new_worker.pm_id)
        assert not watch.probed(new_worker, None if healthy else "connection refused", now)
    return probed


def test_the_window_opens_at_the_first_good_answer_of_any_server_and_lasts_stable_for() -> None:
    window = StabilityWindow(stable_for=4.0, timeout=10.0, started=1.0)
    assert window.opened is None and window.end is None and not window.over(100.0)
    assert window.answered(2, 3.0) and not window.answered(2, 3.5)  # a later answer does not move it
    assert window.answered(3, 3.2)
    assert window.opened == 3.0 and window.end == 7.0
    assert not window.over(6.9) and window.over(7.0)
    assert not window.timed_out(10.9) and window.timed_out(11.0)


def test_the_windows_messages_say_who_failed_when_and_that_the_old_release_serves() -> None:
    window = StabilityWindow(stable_for=4.0, timeout=8.0, started=1.0)
    before = window.exited("the new release", 0, 1, 2.0)
    assert before.message == "the new release exited with code 1 before answering its health check"
    assert before.hint == "fix the crash shown above (the old release is still serving)"
    window.answered(0, 2.0)
    assert window.exited("the new release", 0, 3, 4.5, since_start=True).message == (
        "the new release exited with code 3 3.5 s after start, during the 4 s stability window")
    assert window.exited("a new worker (PM2 id 2)", 0, None, 4.5).message == (
        "a new worker (PM2 id 2) exited 2.5 s after its first good answer, during the 4 s stability window")
    unhealthy = window.unhealthy("the new release", 0, "answered 500", 3.0)
    assert unhealthy.message == ("the new release became unhealthy 1.0 s after its first good answer, during the "
                                 "4 s stability window: answered 500")
    assert unhealthy.hint == "fix the error shown above (the old release is still serving)"
    late = window.not_healthy("connection refused", " (the server: health answered 500)", "is /api/health right?")
    assert late.message == ("the new release was not healthy within 8 s: connection refused "
                            "(the server: health answered 500)")
    assert late.hint == "is /api/health right?; the old release is still serving"


def test_a_held_window_goes_live_after_smoke_and_one_fresh_look_at_the_end() -> None:
    watch = held_window(stable_for=4.0)
    first = worker(2, 200)
    # Round 1: PM2 lists one new worker, not held yet (booting): nothing probed, and not ready.
    assert round_at(watch, 0.0, {}, old_and(first)) == []
    assert watch.problem == "worker 2 is not ready yet"
    assert not watch.rest_due(spawned=0.0)
    assert watch.next(0.0) is Next.WAIT and watch.pause(0.0) == POLL  # before the window: every POLL
    # Its held file appears: PM2 is asked again at once (an unlisted pid), it is probed and answers healthy.
    assert round_at(watch, 0.5, {200: 5000}, old_and(first)) == [2]
    assert watch.window.opened == 0.5
    assert watch.rest_due(spawned=0.0) and not watch.rest_due(spawned=0.0)  # the rest: once, as it answered
    assert watch.next(0.5) is Next.WAIT and watch.problem == "1 of 2 new workers started"
    second = worker(3, 300)
    assert round_at(watch, 0.65, {200: 5000}, old_and(first, second)) == []  # 2 answered 0.15 s ago
    assert watch.problem == "worker 3 is not ready yet"
    assert watch.next(0.65) is Next.WAIT and watch.pause(0.65) == WINDOW_POLL  # in the window: its pace
    held = {200: 5000, 300: 5001}
    assert round_at(watch, 1.0, held, old_and(first, second)) == [2, 3]
    assert watch.next(1.0) is Next.SMOKE and watch.smoke_port() == 5000
    assert round_at(watch, 1.05, held) == []  # nothing due, PM2 not asked (LIST_POLL not over)
    assert watch.next(1.05) is Next.WAIT
    assert round_at(watch, 4.4, held, old_and(first, second)) == [2, 3]
    assert watch.next(4.4) is Next.WAIT and watch.pause(4.4) == pytest.approx(0.1)  # up to the window's end
    # The end: one more round, fresh (PM2 listed, every worker probed), then done.
    assert watch.next(4.5) is Next.FRESH
    assert round_at(watch, 4.5, held, old_and(first, second)) == [2, 3]
    assert watch.next(4.5) is Next.DONE and watch.new == [first, second]


def test_a_worker_that_is_restarted_or_given_up_in_the_window_fails_it() -> None:
    watch = held_window()
    round_at(watch, 0.0, {200: 5000}, old_and(worker(2, 200), worker(3, 300)))
    # PM2 restarted worker 3 (a new pid) while booting: it exited before answering.
    assert watch.begin(0.0 + LIST_POLL, {})
    with pytest.raises(PreflightError, match=r"^a new worker \(PM2 id 3\) exited with code 1 before answering"):
        watch.listed(old_and(worker(2, 200), worker(3, 301, restarts=1, exit_code=1)))
    # Worker 2 answered at 0.0; errored at 1.2: in the window.
    watch.begin(1.2, {})
    with pytest.raises(PreflightError, match=r"exited 1.2 s after its first good answer, during the 4 s"):
        watch.listed(old_and(worker(2, 200, status="errored"), worker(3, 300)))
    # An old worker PM2 restarted is none of the window's business.
    watch.begin(1.3, {})
    watch.listed([worker(0, 999, restarts=3), worker(1, 101), worker(2, 200), worker(3, 300)])


def test_a_worker_healthy_once_that_stops_answering_fails_the_window_and_says_how() -> None:
    watch = held_window()
    healthy = worker(2, 200)
    round_at(watch, 0.0, {200: 5000}, old_and(healthy))
    assert watch.begin(1.0, {200})
    watch.listed(old_and(healthy))
    [(due, _port)] = watch.due({200: 5000})
    assert watch.probed(due, "connection reset", 1.0)  # healthy before: a failure in the window
    assert watch.unhealthy(due, None, "connection reset", 1.5).message == (
        "a new worker (PM2 id 2) exited 1.5 s after its first good answer, during the 4 s stability window")
    assert watch.unhealthy(due, worker(2, 201, restarts=1), "connection reset", 1.5).message.startswith(
        "a new worker (PM2 id 2) exited 1.5 s")
    assert watch.unhealthy(due, healthy, "answered 500", 1.5).message == (
        "a new worker (PM2 id 2) became unhealthy 1.5 s after its first good answer, during the 4 s stability "
        "window: answered 500")
    # One that never answered healthy is only not ready yet: a problem for this round, no failure.
    watch.begin(1.6, {})
    watch.problem = None
    assert not watch.probed(worker(3, 300), "connection refused", 1.6) and watch.problem == "connection refused"


def test_a_release_not_healthy_in_time_times_out_and_the_rest_start_after_rest_after() -> None:
    watch = held_window(timeout=10.0)
    booting = worker(2, 200)
    round_at(watch, 0.0, {}, old_and(booting))
    assert not watch.rest_due(spawned=0.0)
    watch.begin(REST_AFTER, {})
    watch.due({})
    assert watch.rest_due(spawned=0.0)  # the first never answered: the rest start anyway
    assert watch.next(REST_AFTER) is Next.WAIT
    watch.begin(10.0, {})
    watch.due({})
    assert watch.next(10.0) is Next.TIMED_OUT
    assert watch.window.not_healthy(watch.problem, "", "hint").message == (
        "the new release was not healthy within 10 s: worker 2 is not ready yet")


def test_a_problem_in_the_fresh_round_means_another_round_and_a_fresh_one_again() -> None:
    watch = held_window(stable_for=0.0, instances=1)
    held = {200: 5000}
    round_at(watch, 0.0, held, old_and(worker(2, 200)))
    assert watch.next(0.0) is Next.SMOKE
    assert watch.next(0.0) is Next.FRESH and watch.fresh
    assert watch.begin(0.01, held)  # fresh: PM2 is asked again however recently it was
    watch.listed(old_and(worker(2, 200)))
    watch.due({})  # its held file is gone (being rewritten): not ready
    assert watch.next(0.01) is Next.WAIT and not watch.fresh
    assert round_at(watch, 0.02, held) == []  # answered 0.02 s ago: not probed again, not fresh
    assert watch.next(0.02) is Next.FRESH


def test_pm2_is_asked_at_once_for_a_held_worker_it_did_not_list_and_a_late_good_release_is_not_timed_out() -> None:
    watch = held_window(stable_for=4.0, timeout=3.0, instances=1)
    round_at(watch, 0.0, {}, old_and())  # PM2 lists no new worker yet
    assert not watch.begin(0.05, {})  # LIST_POLL not over, nothing new held: the held files only
    assert watch.begin(0.05, {200: 5000})  # a held pid PM2 was not seen to run: asked again at once
    watch.listed(old_and(worker(2, 200)))
    assert [w.pm_id for w, _port in watch.due({200: 5000})] == [2]
    watch.probed(worker(2, 200), None, 2.9)
    assert watch.next(2.9) is Next.SMOKE
    # Healthy and in its window when the timeout is reached: the timeout is for the first answer, not the end.
    assert round_at(watch, 3.5, {200: 5000}, old_and(worker(2, 200))) == [2]
    assert watch.next(3.5) is Next.WAIT
