"""The fleet's decisions (nextdeploy.fleet.plan): rollout order, all or nothing, convergence."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextdeploy.core.errors import ConfigError
from nextdeploy.fleet.plan import (
    HostOutcome,
    HostStatus,
    Outcome,
    Verdict,
    after_rollout,
    batch_size,
    convergence,
    interrupted_message,
    nothing_switched_message,
    rollout_waves,
)

HOSTS = [f"web{n}" for n in range(1, 11)]

batches = st.one_of(st.integers(1, 12), st.integers(1, 100).map(lambda n: f"{n}%"))


@given(st.integers(0, 10), st.integers(0, 3), batches)
def test_every_host_switches_once_in_config_order_canary_first(count: int, canary: int, batch: int | str) -> None:
    hosts = HOSTS[:count]
    waves = rollout_waves(hosts, canary, batch)
    assert [host for wave in waves for host in wave] == hosts
    assert all(wave for wave in waves)
    if canary and hosts:
        assert waves[0] == tuple(hosts[:canary])
    rest = waves[1:] if canary and hosts else waves
    size = batch_size(batch, count - min(canary, count))
    assert size >= 1
    assert all(len(wave) == size for wave in rest[:-1]) and all(len(wave) <= size for wave in rest)


def test_waves_by_number_and_percentage() -> None:
    five = HOSTS[:5]
    assert rollout_waves(five) == (("web1",), ("web2",), ("web3",), ("web4",), ("web5",))
    assert rollout_waves(five, 1, 2) == (("web1",), ("web2", "web3"), ("web4", "web5"))
    assert rollout_waves(five, 2, "50%") == (("web1", "web2"), ("web3",), ("web4",), ("web5",))  # 50% of 3: 1
    assert rollout_waves(five, 1, "50%") == (("web1",), ("web2", "web3"), ("web4", "web5"))
    assert rollout_waves(five, 0, "100%") == (tuple(five),)
    assert rollout_waves(HOSTS[:3], 1, "10%") == (("web1",), ("web2",), ("web3",))  # at least 1
    assert rollout_waves(HOSTS[:2], 5, 1) == (("web1", "web2"),)  # a canary larger than the fleet
    assert rollout_waves([], 1, 1) == ()


@pytest.mark.parametrize("batch", [0, -1, "0%", "101%", "half", "", True, "5"])
def test_a_bad_batch_is_a_config_error(batch: int | str) -> None:
    with pytest.raises(ConfigError) as raised:
        rollout_waves(HOSTS[:3], 1, batch)
    assert "[rollout] batch" in raised.value.message and raised.value.hint


def test_a_bad_canary_or_a_host_listed_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="canary"):
        rollout_waves(HOSTS[:3], -1, 1)
    with pytest.raises(ConfigError, match="web2 more than once"):
        rollout_waves(["web1", "web2", "web2"], 1, 1)


# --- all or nothing ---------------------------------------------------------------------------------


def test_all_switched_is_a_success_with_nothing_to_put_back() -> None:
    decision = after_rollout([HostOutcome(host, Outcome.SWITCHED) for host in HOSTS[:3]], "B", "A")
    assert decision.succeeded and decision.message() == ""
    assert decision.put_back == decision.untouched == decision.unknown == ()


def test_a_failure_on_the_last_host_puts_every_earlier_host_back() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED), HostOutcome("web2", Outcome.SWITCHED),
                HostOutcome("web3", Outcome.FAILED, "preflight", "GET /api/health answered 500", live="A")]
    decision = after_rollout(outcomes, "B", "A")
    assert not decision.succeeded
    assert decision.put_back == ("web1", "web2") and decision.untouched == ("web3",)
    assert decision.message() == "web3 failed at preflight: GET /api/health answered 500"


def test_a_host_that_failed_after_its_switch_and_still_serves_the_new_release_is_put_back() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED),
                HostOutcome("web2", Outcome.FAILED, "verify", "worker crashed", live="B"),
                HostOutcome("web3", Outcome.NOT_STARTED)]
    decision = after_rollout(outcomes, "B", "A")
    assert decision.put_back == ("web1", "web2") and decision.untouched == ("web3",)


def test_a_host_lost_mid_step_is_unknown_one_lost_before_is_untouched() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED),
                HostOutcome("web2", Outcome.UNREACHABLE, "activate", "cannot reach web2 over SSH"),
                HostOutcome("web3", Outcome.UNREACHABLE, None, "connection refused")]
    decision = after_rollout(outcomes, "B", "A")
    assert decision.put_back == ("web1",) and decision.unknown == ("web2",) and decision.untouched == ("web3",)
    assert decision.message() == "web2 was lost at activate: cannot reach web2 over SSH"
    assert json.loads(json.dumps(decision.to_json()))["failure"]["outcome"] == "unreachable"


def test_hosts_proven_or_aborted_at_their_gate_never_switched_and_are_left_alone() -> None:
    outcomes = [HostOutcome("web1", Outcome.ABORTED, "activate"), HostOutcome("web2", Outcome.PROVEN),
                HostOutcome("web3", Outcome.FAILED, "preflight", "the app exited", "A")]
    decision = after_rollout(outcomes, "B", "A")
    assert decision.put_back == () and decision.unknown == () and decision.untouched == ("web1", "web2", "web3")
    assert decision.message() == "web3 failed at preflight: the app exited"
    with pytest.raises(ValueError):  # aborted without a failure or a signal: a bug of the caller
        after_rollout([HostOutcome("web1", Outcome.SWITCHED), HostOutcome("web2", Outcome.ABORTED)], "B", "A")


def test_hosts_not_started_without_a_failure_is_a_bug_of_the_caller() -> None:
    with pytest.raises(ValueError):
        after_rollout([HostOutcome("web1", Outcome.SWITCHED), HostOutcome("web2", Outcome.NOT_STARTED)], "B", "A")


outcomes_strategy = st.lists(
    st.builds(lambda outcome, step, live: (outcome, step, live), st.sampled_from(list(Outcome)),
              st.sampled_from([None, "preflight", "activate", "verify"]), st.sampled_from([None, "A", "B"])),
    min_size=1, max_size=8)


@given(outcomes_strategy)
def test_a_failed_rollout_leaves_no_host_on_the_new_release(raw: list[tuple[Outcome, str | None, str | None]]) -> None:
    """Whatever happened, once put back is done, no reachable host serves B: mixed versions never remain
    (the unknown ones are lost and are converged by the next command)."""
    outcomes = [HostOutcome(f"web{n}", outcome, step, None, live) for n, (outcome, step, live) in enumerate(raw)]
    if not any(o.outcome in (Outcome.FAILED, Outcome.UNREACHABLE) for o in outcomes):
        if any(o.outcome in (Outcome.NOT_STARTED, Outcome.ABANDONED, Outcome.PROVEN, Outcome.ABORTED)
               for o in outcomes):
            return
        assert after_rollout(outcomes, "B", "A").succeeded
        return
    decision = after_rollout(outcomes, "B", "A")
    groups = [decision.put_back, decision.untouched, decision.unknown]
    assert sorted(host for group in groups for host in group) == sorted(o.host for o in outcomes)
    for outcome in outcomes:
        serves_b = outcome.outcome is Outcome.SWITCHED or (outcome.outcome is Outcome.FAILED and outcome.live == "B")
        assert (outcome.host in decision.put_back) == serves_b
    assert decision.failure is not None and decision.failure.host in decision.message()
    assert json.loads(json.dumps(decision.to_json()))["put_back"] == list(decision.put_back)


# --- convergence ------------------------------------------------------------------------------------


def status(host: str, live: str | None, *ready: str, reachable: bool = True) -> HostStatus:
    return HostStatus(host, reachable, live, tuple(ready))


def test_one_release_everywhere_is_uniform() -> None:
    result = convergence([status("web1", "A", "A"), status("web2", "A", "A", "B")])
    assert result.verdict is Verdict.UNIFORM and result.converged
    assert result.target == "A" and result.move == ()


def test_killed_mid_rollout_converges_to_the_new_release_when_it_is_ready_everywhere() -> None:
    statuses = [status("web1", "B", "A", "B"), status("web2", "A", "A", "B"), status("web3", "A", "A", "B")]
    result = convergence(statuses, installing="B", previous="A")
    assert result.verdict is Verdict.MIXED and not result.converged
    assert result.target == "B" and result.move == ("web2", "web3")
    assert result.live == {"B": ("web1",), "A": ("web2", "web3")}
    # Without the deploy's record, the newest live release is the one an interrupted rollout installed.
    assert convergence(statuses).target == "B"


def test_killed_mid_rollout_goes_back_when_the_new_release_is_missing_somewhere() -> None:
    statuses = [status("web1", "B", "A", "B"), status("web2", "A", "A", "B"), status("web3", "A", "A")]
    result = convergence(statuses, installing="B", previous="A")
    assert result.target == "A" and result.move == ("web1",)
    assert convergence(statuses).target == "A"


def test_unreachable_hosts_are_named_and_nothing_is_decided_for_them() -> None:
    statuses = [status("web1", "A", "A"), status("web2", None, reachable=False), status("web3", "A", "A")]
    result = convergence(statuses)
    assert result.verdict is Verdict.UNKNOWN and not result.converged
    assert result.unreachable == ("web2",) and result.move == () and result.target == "A"
    mixed = convergence([*statuses, status("web4", "B", "A", "B")], installing="B")
    assert mixed.verdict is Verdict.MIXED and mixed.target == "A" and mixed.move == ("web4",)


def test_no_release_ready_everywhere_moves_nothing() -> None:
    result = convergence([status("web1", "B", "B"), status("web2", "A", "A")], installing="B", previous="A")
    assert result.verdict is Verdict.MIXED and result.target is None and result.move == ()


def test_a_host_serving_nothing_is_moved_too() -> None:
    result = convergence([status("web1", "A", "A"), status("web2", None, "A")])
    assert result.verdict is Verdict.MIXED and result.target == "A" and result.move == ("web2",)
    assert convergence([status("web1", None), status("web2", None)]).verdict is Verdict.UNIFORM


releases = st.sampled_from(["A", "B", "C"])
statuses_strategy = st.lists(
    st.builds(lambda reachable, live, ready: (reachable, live, ready), st.booleans(), st.one_of(st.none(), releases),
              st.frozensets(releases)), min_size=1, max_size=6)


@given(statuses_strategy, st.one_of(st.none(), releases), st.one_of(st.none(), releases))
def test_converging_makes_every_reachable_host_serve_one_ready_release(
        raw: list[tuple[bool, str | None, frozenset[str]]], installing: str | None, previous: str | None) -> None:
    # A host serves a release it has (a live release is always present on its host).
    statuses = [HostStatus(f"web{n}", reachable, live if reachable else None,
                           tuple(sorted(ready | ({live} if live and reachable else set()))))
                for n, (reachable, live, ready) in enumerate(raw)]
    result = convergence(statuses, installing, previous)
    after = {s.host: (result.target if s.host in result.move else s.live) for s in statuses if s.reachable}
    if result.verdict is Verdict.MIXED and result.target is not None:
        assert len(set(after.values())) == 1  # one release on every reachable host
        assert all(result.target in s.ready for s in statuses if s.reachable)
    if result.verdict is not Verdict.MIXED:
        assert result.move == () and len(set(after.values())) <= 1
    if result.target is None:
        assert result.move == ()
    assert json.loads(json.dumps(result.to_json()))["verdict"] == str(result.verdict)
    assert HostStatus.from_json(json.loads(json.dumps(statuses[0].to_json()))) == statuses[0]


# --- an interrupted rollout (Ctrl-C, SIGTERM of the controller) -------------------------------------------


@given(outcomes_strategy)
def test_an_interrupted_rollout_never_succeeds_and_puts_back_every_host_on_the_new_release(
        raw: list[tuple[Outcome, str | None, str | None]]) -> None:
    outcomes = [HostOutcome(f"web{n}", outcome, step, None, live) for n, (outcome, step, live) in enumerate(raw)]
    decision = after_rollout(outcomes, "B", "A", interrupted="SIGTERM")
    assert not decision.succeeded and decision.interrupted == "SIGTERM"
    groups = [decision.put_back, decision.untouched, decision.unknown]
    assert sorted(host for group in groups for host in group) == sorted(o.host for o in outcomes)
    for outcome in outcomes:
        serves_b = outcome.outcome is Outcome.SWITCHED or (outcome.outcome is Outcome.FAILED and outcome.live == "B")
        assert (outcome.host in decision.put_back) == serves_b
        assert (outcome.host in decision.unknown) == (outcome.outcome is Outcome.ABANDONED or (
            outcome.outcome is Outcome.UNREACHABLE and outcome.step is not None))


def test_interrupted_after_the_canary_puts_it_back_and_says_so() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED), HostOutcome("web2", Outcome.NOT_STARTED),
                HostOutcome("web3", Outcome.NOT_STARTED)]
    decision = after_rollout(outcomes, "B", "A", interrupted="SIGINT")
    assert decision.put_back == ("web1",) and decision.untouched == ("web2", "web3") and decision.failure is None
    assert decision.message() == "interrupted by SIGINT"
    assert interrupted_message(decision) == ("interrupted by SIGINT during the rollout of B; put web1 back to A; "
                                             "every host serves what it served before")
    assert json.loads(json.dumps(decision.to_json()))["interrupted"] == "SIGINT"


def test_interrupted_after_every_wave_still_puts_every_host_back() -> None:
    """Nothing of an interrupted run stays live, even when its last wave had switched."""
    decision = after_rollout([HostOutcome(host, Outcome.SWITCHED) for host in HOSTS[:3]], "B", None,
                             interrupted="SIGTERM")
    assert decision.put_back == tuple(HOSTS[:3])
    assert interrupted_message(decision).startswith("interrupted by SIGTERM during the rollout of B; put web1, "
                                                    "web2, web3 back to nothing (stopped)")


def test_a_host_abandoned_at_its_step_is_unknown_and_named() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED), HostOutcome("web2", Outcome.ABANDONED, "activate"),
                HostOutcome("web3", Outcome.NOT_STARTED)]
    decision = after_rollout(outcomes, "B", "A", interrupted="SIGINT")
    assert decision.put_back == ("web1",) and decision.unknown == ("web2",) and decision.untouched == ("web3",)
    assert interrupted_message(decision) == (
        "interrupted by SIGINT during the rollout of B; put web1 back to A; web2 still at it when abandoned (its "
        "own nextdeploy finishes it): the next deploy or rollback converges the fleet")
    nothing = after_rollout([HostOutcome("web1", Outcome.ABANDONED, "activate")], "B", "A", interrupted="SIGINT")
    assert interrupted_message(nothing).split("; ")[1] == "no host had switched"


def test_interrupted_before_any_host_switched_says_nothing_live_changed_and_what_each_host_serves() -> None:
    """Stopped while the hosts prove the release (or before the first wave): no host switched."""
    proving = [HostOutcome("web1", Outcome.ABORTED, "activate"), HostOutcome("web2", Outcome.NOT_STARTED)]
    decision = after_rollout(proving, "B", "A", interrupted="SIGTERM")
    assert interrupted_message(decision) == ("interrupted by SIGTERM before any host switched: every host still "
                                             "serves A (nothing live changed)")
    assert interrupted_message(decision, {"web1": "A", "web2": None}) == (
        "interrupted by SIGTERM before any host switched: every host still serves what it served: web1 A, "
        "web2 none (nothing live changed)")
    first = after_rollout(proving, "B", None, interrupted="SIGINT")
    assert interrupted_message(first) == ("interrupted by SIGINT before any host switched: nothing was live on any "
                                          "host, and nothing is (nothing live changed)")
    assert nothing_switched_message("SIGHUP", None) == ("interrupted by SIGHUP before any host switched: every "
                                                        "host still serves what it served (nothing live changed)")


def test_a_host_failure_during_an_interrupted_rollout_is_still_the_failure_reported() -> None:
    outcomes = [HostOutcome("web1", Outcome.SWITCHED),
                HostOutcome("web2", Outcome.FAILED, "preflight", "the app exited", live="A")]
    decision = after_rollout(outcomes, "B", "A", interrupted="SIGINT")
    assert decision.put_back == ("web1",) and decision.message() == "web2 failed at preflight: the app exited"
