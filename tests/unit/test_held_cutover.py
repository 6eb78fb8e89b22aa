"""The held cut-over's decisions on the fake PM2 (``nextdeploy.pm2.fake``): approve a release that is healthy
and stable, reject one that dies, is restarted, never answers or is interrupted in its window (the old
workers serving throughout), and recover from a run killed in or after the window. The same behaviour with
real PM2, node and Next.js: tests/integration/test_activation.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nextdeploy.activation.held import activate_held
from nextdeploy.activation.recovery import recover
from nextdeploy.activation.window import REST_AFTER
from nextdeploy.core import interrupts
from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ActivationError, ExitCode, Interrupted, PreflightError, RollbackError
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.core.ui import Reporter
from nextdeploy.pm2.fake import Behaviour, FakeHost, Killed

STABLE_FOR = 3.0
TIMEOUT = 8.0


@contextmanager
def live_host(tmp_path: Path, instances: int = 2) -> Iterator[FakeHost]:
    """r1 live: its workers serving, approved; the fake clock and workers installed."""
    config = parse_config({"app": {"name": "hello", "source": "app"},
                           "server": {"root": str(tmp_path / "root"), "port": 3000, "instances": instances},
                           "health": {"stable_for": STABLE_FOR, "timeout": TIMEOUT}}, tmp_path)
    fake = FakeHost(config)
    fake.serve("r1")
    with fake.installed():
        context(fake).log.append("activated", "r1")
        yield fake


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    with live_host(tmp_path) as fake:
        yield fake


def context(host: FakeHost) -> Context:
    return Context(host.config, host.executor, Reporter(force_plain=True))


def serving_log(host: FakeHost) -> list[tuple[float, tuple[str | None, ...]]]:
    """(time, release of each worker on the public port) after every move of the clock, from now on."""
    seen: list[tuple[float, tuple[str | None, ...]]] = []
    host.clock.on_tick.append(lambda: seen.append((host.clock.now, tuple(host.daemon.releases_serving()))))
    return seen


def start_cutover(host: FakeHost, behaviour: Behaviour) -> None:
    host.make_release("r2", behaviour)
    activate_held(context(host), host.pm2, "r2", "r1", old_ids(host))


def old_ids(host: FakeHost) -> tuple[int, ...]:
    return tuple(w.pm_id for w in host.pm2.workers("hello"))


def when(host: FakeHost, what: str) -> list[float]:
    """When the fake PM2's history shows ``what`` (e.g. "delete 0", "2 held")."""
    return [float(line.split(" ", 1)[0]) for line in host.daemon.history if line.split(" ", 1)[1].startswith(what)]


def assert_old_release_served_throughout(host: FakeHost, old: dict[int, int],
                                         seen: list[tuple[float, tuple[str | None, ...]]]) -> None:
    """The old workers (``old``: pm_id -> pid) serve on, untouched; nothing of r2 is left; r1 is current."""
    assert {w.pm_id: w.pid for w in host.pm2.workers("hello")} == old
    assert host.pm2.leaving_workers("hello") == []
    # Only r1 answers, from both its workers (and a moment from a worker PM2 7 forked again after its delete,
    # from `current`: r1 again by then, see purge_workers).
    assert all(set(releases) == {"r1"} and len(releases) >= 2 for _, releases in seen), seen
    assert host.paths.current_link.readlink() == Path("releases/r1")
    assert not host.paths.held_state_file.exists()
    assert not ReleaseLayout(host.paths.release_dir("r2")).approved_file.exists()
    assert list(ReleaseLayout(host.paths.release_dir("r2")).held_dir.glob("*")) == []


def rejected(host: FakeHost, behaviour: Behaviour) -> PreflightError:
    """Deploy r2 with ``behaviour``; it must be rejected with r1 serving throughout."""
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    seen = serving_log(host)
    with pytest.raises(PreflightError) as caught:
        start_cutover(host, behaviour)
    assert caught.value.exit_code == ExitCode.PREFLIGHT_FAILED
    assert_old_release_served_throughout(host, old, seen)
    last = context(host).log.events()[-1]
    assert (last["event"], last["release"]) == ("failed", "r2")
    return caught.value


def test_a_healthy_release_is_approved_and_the_old_workers_are_deleted_only_after_its_window(host: FakeHost) -> None:
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    seen = serving_log(host)
    start_cutover(host, Behaviour(boot=0.7))
    workers = host.pm2.workers("hello")
    assert [w.release_in(host.paths.releases_dir) for w in workers] == ["r2", "r2"]
    assert not {w.pm_id for w in workers} & old.keys()  # the held workers themselves serve: no second boot
    first_answer = min(when(host, f"{w.pm_id} held")[0] for w in workers)
    deleted = [when(host, f"delete {pm_id}")[0] for pm_id in old]
    serving = [when(host, f"{w.pm_id} approved: serving")[0] for w in workers]
    # Deleted once the release stayed healthy for the whole window, and after the new workers serve.
    assert min(deleted) >= first_answer + STABLE_FOR
    assert min(deleted) >= max(serving)
    # No moment without a worker on the public port; r2's only after its window.
    assert all(releases for _, releases in seen), seen
    assert all(now >= first_answer + STABLE_FOR for now, releases in seen if "r2" in releases)
    assert not host.paths.held_state_file.exists()
    events = [(e["event"], e["release"]) for e in context(host).log.events()]
    assert events[-2:] == [("switching", "r2"), ("activated", "r2")]
    assert host.daemon.saves >= 1  # for a reboot


@pytest.mark.parametrize(("boot", "rest_at"), [(0.5, "the first answer"), (2.5, "REST_AFTER")])
def test_one_new_worker_boots_first_the_others_once_it_answers(tmp_path: Path, boot: float, rest_at: str) -> None:
    # Two Next.js boots at once on a small machine starve the old workers that serve meanwhile.
    with live_host(tmp_path, instances=3) as host:
        started = host.clock.now
        start_cutover(host, Behaviour(boot=boot))
        spawned = [when(host, f"duplicate {pm_id} -> ")[0] for pm_id in (0, 1, 2)]
        first_answer = when(host, "3 held")[0]
        assert spawned[0] == pytest.approx(started, abs=0.01)
        expected = first_answer if rest_at == "the first answer" else started + REST_AFTER
        assert spawned[1] == spawned[2] == pytest.approx(expected, abs=0.05)
        assert host.daemon.releases_serving() == ["r2", "r2", "r2"]


@pytest.mark.parametrize("max_restarts", [15, 0], ids=["pm2-restarts-it", "pm2-gives-up"])
def test_a_worker_that_exits_in_the_window_rejects_the_release(host: FakeHost, max_restarts: int) -> None:
    host.daemon.max_restarts = max_restarts
    error = rejected(host, Behaviour(boot=0.5, dies_after=2.0, exit_code=3))
    assert "exited with code 3" in error.message and "stability window" in error.message, error.message


def test_a_worker_pm2_restarted_unseen_by_the_probes_rejects_the_release(host: FakeHost) -> None:
    # It exits once and is back at once, answering healthy: only its new pid and restart count tell.
    error = rejected(host, Behaviour(boot=0.5, dies_after=1.5, dies_once=True, restart_boot=0.0))
    assert "exited with code 1" in error.message and "stability window" in error.message, error.message


def test_a_release_that_crashes_at_boot_is_rejected_and_no_worker_pm2_forks_again_survives(host: FakeHost) -> None:
    error = rejected(host, Behaviour(boot=1.0, dies_after=0.3))  # a crash loop, never 'ready'
    assert "exited with code 1 before answering its health check" in error.message, error.message
    assert [line for line in host.daemon.history if "forked again after its delete" in line]  # and were deleted


def test_a_release_that_never_answers_is_rejected_at_the_timeout(host: FakeHost) -> None:
    started = host.clock.now
    error = rejected(host, Behaviour(answers=False))
    assert f"not healthy within {TIMEOUT:g} s" in error.message, error.message
    assert TIMEOUT <= when(host, "delete 2")[0] - started < TIMEOUT + 1


def test_a_release_whose_health_fails_is_rejected(host: FakeHost) -> None:
    error = rejected(host, Behaviour(status=500))
    assert "answered 500, expected 200" in error.message, error.message


@pytest.mark.parametrize(("behaviour", "problem"), [
    (Behaviour(boot=0.5, unhealthy_after=2.0), "/api/health answered 500, expected 200"),
    (Behaviour(boot=0.5, hangs_after=2.0), "no answer within 5 s"),  # a blocked event loop
], ids=["answers-500", "hangs"])
def test_a_worker_unhealthy_after_its_first_good_answer_rejects_the_release(host: FakeHost, behaviour: Behaviour,
                                                                            problem: str) -> None:
    error = rejected(host, behaviour)
    assert "became unhealthy" in error.message and "stability window" in error.message, error.message
    assert error.message.endswith(problem), error.message


@pytest.fixture
def stop_signals() -> Iterator[None]:
    """The CLI's handlers: SIGTERM and SIGHUP raise Interrupted, SIGINT Python's KeyboardInterrupt."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    for signum in saved:
        signal.signal(signum, signal.SIG_DFL)
    interrupts.install()
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)  # SIGHUP: same path
@pytest.mark.usefixtures("stop_signals")
def test_a_stop_signal_in_the_window_deletes_the_new_workers(host: FakeHost, signum: signal.Signals) -> None:
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    seen = serving_log(host)
    sent: list[float] = []

    def signal_in_the_window() -> None:  # a real signal to this process, 1 s after the first new worker answered
        answered = when(host, "2 held")
        if not sent and answered and host.clock.now >= answered[0] + 1.0:
            sent.append(host.clock.now)
            os.kill(os.getpid(), signum)
    host.clock.on_tick.append(signal_in_the_window)
    try:
        start_cutover(host, Behaviour(boot=0.5))
    except Interrupted as exc:  # what the CLI turns into exit code 130 and its message
        caught = exc
    except KeyboardInterrupt:
        pytest.fail("a bare KeyboardInterrupt left the held cut-over")
    else:
        pytest.fail("the interrupt was lost")
    assert caught.signal_name == signum.name
    assert "was held off the public port; its workers were deleted, r1 served throughout" in caught.message
    assert sent and when(host, "delete 2")[0] >= sent[0]  # it was in its window, and is deleted
    assert_old_release_served_throughout(host, old, seen)
    last = context(host).log.events()[-1]
    assert (last["event"], last["release"]) == ("failed", "r2")


def test_an_old_worker_pm2_restarted_during_a_rejected_window_is_restarted_on_the_old_release(
        host: FakeHost) -> None:
    # PM2 restarts a crashed worker from `current`: the new release, held (here: one that never answers).
    # Once the release is rejected, that worker is reloaded on the old one.
    old_pid = host.pm2.workers("hello")[0].pid
    crashed: list[int] = []

    def crash_once() -> None:
        if not crashed and host.daemon.find(2) is not None:  # once the first new worker was spawned
            crashed.append(old_pid)
            host.daemon.kill(old_pid)
    host.clock.on_tick.append(crash_once)
    with pytest.raises(PreflightError, match="not healthy within"):
        start_cutover(host, Behaviour(answers=False))
    assert when(host, "0 restarted by PM2")
    workers = host.pm2.workers("hello")
    assert [w.pm_id for w in workers] == [0, 1]
    assert [w.release_in(host.paths.releases_dir) for w in workers] == ["r1", "r1"]
    assert host.daemon.releases_serving() == ["r1", "r1"]


def test_a_release_that_fails_after_the_cut_over_is_rolled_back_beside_it(host: FakeHost) -> None:
    # Healthy on its private port through the window, it cannot open the public port once approved (a crash
    # loop): the old release comes back, its workers held beside the failing ones until healthy.
    with pytest.raises(ActivationError) as caught:
        start_cutover(host, Behaviour(boot=0.5, opens_public=False))
    assert caught.value.exit_code == ExitCode.ROLLED_BACK
    assert "release r2 failed after the switch" in caught.value.message
    assert caught.value.message.endswith("rolled back to r1"), caught.value.message
    workers = host.pm2.workers("hello")
    assert [w.release_in(host.paths.releases_dir) for w in workers] == ["r1", "r1"]
    # Started beside r2's (2, 3) and held until healthy, not r2's reloaded in place.
    assert not {w.pm_id for w in workers} & {0, 1, 2, 3}
    assert all(when(host, f"{w.pm_id} held") for w in workers)
    assert host.daemon.releases_serving() == ["r1", "r1"]
    assert host.paths.current_link.readlink() == Path("releases/r1")
    assert ReleaseLayout(host.paths.release_dir("r1")).approved_file.exists()
    assert not host.paths.held_state_file.exists()
    events = [(e["event"], e["release"]) for e in context(host).log.events()]
    assert events[-2:] == [("rolled_back", "r1"), ("failed", "r2")]


def test_a_rollback_target_that_fails_its_check_is_refused_and_stays_approved(host: FakeHost) -> None:
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    seen = serving_log(host)
    host.make_release("r0", Behaviour(status=503), approved=True)  # it served well before
    with pytest.raises(RollbackError) as caught:
        activate_held(context(host), host.pm2, "r0", "r1", old_ids(host), rollback=True)
    assert caught.value.exit_code == ExitCode.ROLLBACK_FAILED
    assert "rollback to r0 refused" in caught.value.message and "r1 served throughout" in caught.value.message
    assert {w.pm_id: w.pid for w in host.pm2.workers("hello")} == old
    assert all(releases == ("r1", "r1") for _, releases in seen), seen
    assert ReleaseLayout(host.paths.release_dir("r0")).approved_file.exists()  # not held against it
    last = context(host).log.events()[-1]
    assert (last["event"], last["release"]) == ("refused", "r0")


def killed(host: FakeHost, due: str) -> dict[int, int]:
    """Deploy r2 (healthy), killed (SIGKILL) at the first moment ``due`` holds; returns r1's workers then."""
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    layout = ReleaseLayout(host.paths.release_dir("r2"))
    checks = {
        "in the window": lambda: any(layout.held_dir.glob("*")),
        "approved": lambda: layout.approved_file.exists(),
        "cut over": lambda: when(host, "delete 0") != [],
        "activated": lambda: context(host).log.events()[-1]["event"] == "activated",
    }
    host.clock.raise_when(checks[due], Killed())
    with pytest.raises(Killed):
        start_cutover(host, Behaviour(boot=0.5))
    return old


def test_recovery_of_a_run_killed_in_the_window_keeps_the_old_workers_serving(host: FakeHost) -> None:
    old = killed(host, "in the window")
    assert host.paths.held_state_file.exists() and host.paths.current_link.readlink() == Path("releases/r2")
    seen = serving_log(host)
    recover(context(host), host.pm2)
    assert_old_release_served_throughout(host, old, seen)
    assert not any(p.release == "r2" for p in host.daemon.processes)


def test_recovery_of_a_run_killed_after_the_approval_puts_the_old_release_back(host: FakeHost) -> None:
    # Approved, before the old workers were deleted: they never stopped serving; r2's go.
    old = killed(host, "approved")
    assert host.paths.held_state_file.exists()
    recover(context(host), host.pm2)
    assert {w.pm_id: w.pid for w in host.pm2.workers("hello")} == old
    assert host.daemon.releases_serving() == ["r1", "r1"]
    assert host.paths.current_link.readlink() == Path("releases/r1")
    assert not host.paths.held_state_file.exists()
    events = [(e["event"], e["release"]) for e in context(host).log.events()]
    assert events[-2:] == [("rolled_back", "r1"), ("failed", "r2")]


def test_recovery_of_a_run_killed_after_the_cut_over_reloads_the_old_release(host: FakeHost) -> None:
    # The old workers were deleted (r2's serve) but r2 was never verified: r1 comes back by a reload.
    killed(host, "cut over")
    assert not host.paths.held_state_file.exists()
    recover(context(host), host.pm2)
    workers = host.pm2.workers("hello")
    assert [w.release_in(host.paths.releases_dir) for w in workers] == ["r1", "r1"]
    assert host.daemon.releases_serving() == ["r1", "r1"]
    assert host.paths.current_link.readlink() == Path("releases/r1")
    events = [(e["event"], e["release"]) for e in context(host).log.events()]
    assert events[-2:] == [("rolled_back", "r1"), ("failed", "r2")]


def test_recovery_of_a_run_killed_once_activated_keeps_the_new_release(host: FakeHost) -> None:
    killed(host, "activated")
    history = len(host.daemon.history)
    recover(context(host), host.pm2)
    assert host.daemon.releases_serving() == ["r2", "r2"]
    assert host.paths.current_link.readlink() == Path("releases/r2")
    assert [line for line in host.daemon.history[history:] if " delete " in f" {line.split(' ', 1)[1]}"] == []


def test_recovery_of_a_rollback_killed_in_its_window_gives_the_target_its_approval_back(host: FakeHost) -> None:
    # r0 served well before r1: a rollback to it takes its approval back for the check, killed meanwhile.
    host.make_release("r0", approved=True)
    log = context(host).log
    log.append("activated", "r0")
    log.append("activated", "r1")
    old = {w.pm_id: w.pid for w in host.pm2.workers("hello")}
    approved = ReleaseLayout(host.paths.release_dir("r0")).approved_file
    host.clock.raise_when(lambda: any(approved.parent.joinpath("held").glob("*")), Killed())
    with pytest.raises(Killed):
        activate_held(context(host), host.pm2, "r0", "r1", old_ids(host), rollback=True)
    assert not approved.exists() and host.paths.held_state_file.exists()
    recover(context(host), host.pm2)
    assert approved.exists()  # a good release again: `rollback --to r0` may pick it
    assert {w.pm_id: w.pid for w in host.pm2.workers("hello")} == old
    assert host.daemon.releases_serving() == ["r1", "r1"]
    events = [(e["event"], e["release"]) for e in context(host).log.events()]
    assert events[-2:] == [("rolled_back", "r1"), ("refused", "r0")]  # refused: not failed for good
