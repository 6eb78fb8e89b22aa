"""The release log: ordering by the log, statuses, torn lines, pending switches."""

from __future__ import annotations

import os
from pathlib import Path

from nextdeploy.core.releaselog import ReleaseLog, Status, fold, pending_switch


def events(*pairs: tuple[str, str]) -> list[dict[str, object]]:
    return [{"event": event, "release": release, "ts": f"t{i}"} for i, (event, release) in enumerate(pairs)]


def test_order_is_the_log_order_not_the_id_or_mtime() -> None:
    records = fold(events(("built", "b"), ("built", "a"), ("activated", "a"), ("activated", "b")))
    assert [r.id for r in records] == ["b", "a"]


def test_statuses() -> None:
    records = {r.id: r for r in fold(events(
        ("building", "u"),
        ("building", "r"), ("built", "r"),
        ("building", "g"), ("built", "g"), ("activated", "g"),
        ("building", "f"), ("built", "f"), ("failed", "f"), ("activated", "f"),
        ("building", "x"), ("built", "x"), ("activated", "x"), ("removed", "x"),
    ))}
    assert records["u"].status is Status.UNFINISHED
    assert records["r"].status is Status.READY
    assert records["g"].status is Status.ACTIVE and records["g"].usable
    assert records["f"].status is Status.FAILED and not records["f"].usable  # failed is sticky
    assert records["x"].status is Status.REMOVED


def test_append_and_read_back_tolerates_a_torn_line(tmp_path: Path) -> None:
    log = ReleaseLog(tmp_path / "releases.jsonl")
    log.append("built", "a", revision="abc")
    with open(log.path, "a") as handle:
        handle.write('{"event": "built", "rele')  # a crash mid-write
    log.append("activated", "a")
    assert [e["event"] for e in log.events()] == ["built", "activated"]
    assert log.records()[0].revision == "abc"
    # The log is never rewritten: appends only.
    assert os.path.getsize(log.path) > 0


def test_pending_switch() -> None:
    assert pending_switch(events(("switching", "b"))) is not None
    assert pending_switch([{**e, "from": "a"} for e in events(("switching", "b"))]).previous == "a"  # type: ignore[union-attr]
    assert pending_switch(events(("switching", "b"), ("activated", "b"))) is None
    assert pending_switch(events(("switching", "b"), ("failed", "b"), ("rolled_back", "a"))) is None
    assert pending_switch(events(("switching", "b"), ("rolled_back", "a"), ("failed", "b"))) is None
    assert pending_switch(events(("activated", "a"))) is None


def test_a_refused_rollback_target_stays_usable_and_settles_its_switch() -> None:
    """A rollback target that failed its check served well before: not marked failed for good."""
    log = events(("built", "a"), ("activated", "a"), ("built", "b"), ("activated", "b"),
                 ("switching", "a"), ("refused", "a"))
    records = {r.id: r for r in fold(log)}
    assert records["a"].usable and records["b"].usable
    assert pending_switch(log) is None
