"""Skew protection: which releases' static files the live one serves, and the links that make it so."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nextdeploy.core.releaselog import fold
from nextdeploy.nextjs.skew import BridgePlan, asset_window, bridge_assets, plan_bridge, static_list_json


def log(*entries: tuple[str, str]) -> list[dict[str, str]]:
    return [{"event": event, "release": release, "ts": f"t{index:03d}"} for index, (event, release) in
            enumerate(entries)]


def deployed(*ids: str) -> list[tuple[str, str]]:
    return [pair for release in ids for pair in (("building", release), ("built", release), ("activated", release))]


def test_window_is_the_most_recently_live_usable_releases() -> None:
    records = fold(log(*deployed("A", "B", "C")))
    assert asset_window(records, "D", 2) == ["D", "C"]
    assert asset_window(records, "D", 3) == ["D", "C", "B"]
    assert asset_window(records, "D", 10) == ["D", "C", "B", "A"]
    assert asset_window(records, "D", 1) == ["D"]


def test_window_after_a_rollback_holds_the_release_rolled_back_from() -> None:
    records = fold(log(*deployed("A", "B", "C"), ("rolled_back", "B")))
    # Deciding for B (the rollback target) before it is live again: C was live last.
    assert asset_window(records, "B", 2) == ["B", "C"]
    # The next deploy after the rollback: B is live, then C, then A.
    assert asset_window(records, "D", 3) == ["D", "B", "C"]


def test_window_skips_failed_removed_and_never_live_releases() -> None:
    records = fold(log(*deployed("A", "B"), ("building", "X"), ("built", "X"), ("failed", "X"),
                       ("building", "Y"), ("built", "Y"),
                       ("building", "Z"), ("built", "Z"), ("activated", "Z"), ("failed", "Z"),
                       ("removed", "A")))
    assert asset_window(records, "N", 5) == ["N", "B"]


def test_plan_keeps_own_files_and_lets_the_most_recent_release_win() -> None:
    plan = plan_bridge(
        own={"chunks/new.js", "css/app.css"},
        sources=[("C", {"chunks/c.js", "shared.txt", "css/app.css"}), ("B", {"chunks/b.js", "shared.txt"})],
        present={"chunks/new.js", "css/app.css", "chunks/a.js", "chunks/b.js"},
    )
    assert plan == BridgePlan(link={"chunks/c.js": "C", "shared.txt": "C", "chunks/b.js": "B"},
                              remove=["chunks/a.js"])


def make_release(releases: Path, release_id: str, files: dict[str, str], app_rel: str = "") -> Path:
    release = releases / release_id
    static = release / app_rel / ".next" / "static" if app_rel else release / ".next" / "static"
    for name, text in files.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_text(text)
    meta = release / ".nextdeploy"
    meta.mkdir(parents=True)
    (meta / "manifest.json").write_text(json.dumps({"id": release_id, "app_rel": app_rel}))
    (meta / "static-files.json").write_text(static_list_json(sorted(files)))
    return static


def test_bridge_links_prunes_and_follows_a_rollback(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    static_a = make_release(releases, "A", {"chunks/a.js": "a", "chunks/common.js": "common"}, "apps/web")
    make_release(releases, "B", {"chunks/b.js": "b", "chunks/common.js": "common"}, "apps/web")
    static_c = make_release(releases, "C", {"chunks/c.js": "c", "chunks/common.js": "common"}, "apps/web")
    static_b = releases / "B" / "apps" / "web" / ".next" / "static"

    # B is deployed after A (K=2): A's chunk is linked into B, B's own common.js is untouched.
    report = bridge_assets(releases, fold(log(*deployed("A"))), "B", 2)
    assert report.window == ["B", "A"] and report.linked == 1
    assert os.path.samefile(static_b / "chunks" / "a.js", static_a / "chunks" / "a.js")
    assert not os.path.samefile(static_b / "chunks" / "common.js", static_a / "chunks" / "common.js")

    # C after B: B's own files only (not A's, bridged into B).
    bridge_assets(releases, fold(log(*deployed("A", "B"))), "C", 2)
    assert (static_c / "chunks" / "b.js").is_file() and not (static_c / "chunks" / "a.js").exists()

    # Rolling back from C to B: B gets C's chunk, A's link leaves B.
    report = bridge_assets(releases, fold(log(*deployed("A", "B", "C"))), "B", 2)
    assert report.window == ["B", "C"] and report.removed == 1
    assert (static_b / "chunks" / "c.js").read_text() == "c"
    assert not (static_b / "chunks" / "a.js").exists()
    assert (static_a / "chunks" / "a.js").read_text() == "a"  # A itself is untouched
    # Idempotent: a second run changes nothing.
    again = bridge_assets(releases, fold(log(*deployed("A", "B", "C"))), "B", 2)
    assert (again.linked, again.copied, again.removed) == (0, 0, 0)


def test_a_release_that_left_the_disk_is_skipped(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    make_release(releases, "B", {"chunks/b.js": "b"})
    report = bridge_assets(releases, fold(log(*deployed("A"))), "B", 3)
    assert report.window == ["B"] and report.linked == 0
