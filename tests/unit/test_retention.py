"""Retention and rollback targets: never the live release or the rollback target; bad ones go first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nextdeploy.core.releaselog import fold
from nextdeploy.core.retention import releases_to_remove, rollback_target


def history(spec: str) -> list[dict[str, object]]:
    """'a+ b- c+ d?' : + activated, - failed after build, ? built only, ~ unfinished."""
    out: list[dict[str, object]] = []
    for token in spec.split():
        release, mark = token[:-1], token[-1]
        out.append({"event": "building", "release": release})
        if mark != "~":
            out.append({"event": "built", "release": release})
        if mark == "+":
            out.append({"event": "activated", "release": release})
        if mark == "-":
            out.append({"event": "failed", "release": release})
    return out


def test_rollback_target_skips_failed_and_unfinished() -> None:
    records = fold(history("a+ b+ c- d~ e+"))
    assert rollback_target(records, "e") == "b"
    assert rollback_target(records, "b") == "a"
    assert rollback_target(records, "a") is None


def test_rollback_target_is_the_release_live_before_current() -> None:
    # a, b, c live in turn; the user rolled back from c to b, then deployed d: d's target is b, not c.
    events = [*history("a+ b+ c+"), {"event": "rolled_back", "release": "b", "from": "c"}, *history("d+")]
    records = fold(events)
    assert rollback_target(records, "d") == "b"
    # Rolling back again from b walks further back in time instead of returning to c.
    assert rollback_target(records, "b") == "a"


def test_keep_counts_only_good_releases_and_removes_bad_first() -> None:
    records = fold(history("a+ b+ c- d+ e~ f+"))
    on_disk = {"a", "b", "c", "d", "e", "f"}
    assert sorted(releases_to_remove(records, on_disk, "f", keep=3)) == ["a", "c", "e"]


def test_after_a_rollback_the_live_release_and_its_target_stay() -> None:
    # Live is b (rolled back from e); its rollback target is a, the oldest. keep=2 must keep a and b.
    events = [*history("a+ b+ c+ d+ e+"), {"event": "rolled_back", "release": "b", "from": "e"}]
    removed = releases_to_remove(fold(events), {"a", "b", "c", "d", "e"}, "b", keep=2)
    assert "a" not in removed and "b" not in removed
    assert sorted(removed) == ["c", "d", "e"]


@given(st.lists(st.sampled_from("+-?~"), min_size=1, max_size=12), st.integers(min_value=1, max_value=6),
       st.data())
def test_never_removes_current_or_target(marks: list[str], keep: int, data: st.DataObject) -> None:
    spec = " ".join(f"r{i:02d}{mark}" for i, mark in enumerate(marks))
    records = fold(history(spec))
    ids = [r.id for r in records]
    current = data.draw(st.sampled_from(ids))
    target = rollback_target(records, current)
    removed = releases_to_remove(records, set(ids), current, keep)
    assert current not in removed and target not in removed
    kept_good = [r.id for r in records if r.usable and r.id not in removed]
    assert len(kept_good) <= max(keep, len({current, target} - {None}))
    # Bad releases never survive unless protected.
    for record in records:
        if not record.usable and record.id not in (current, target):
            assert record.id in removed
