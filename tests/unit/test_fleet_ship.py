"""Shipping's pure parts (nextdeploy.fleet.ship): which host releases a ship compares with, and mtimes
derived from content (so that identical files can be hard links on the host)."""

from __future__ import annotations

import os
from pathlib import Path

from nextdeploy.fleet.ship import MTIME_BASE, MTIME_SPAN, link_dests, normalise_mtimes

A, B, C, D = "20261201-100000-000-aaaa", "20261202-100000-000-bbbb", "20261203-100000-000-cccc", \
    "20261204-100000-000-dddd"


def test_the_live_release_first_then_the_newest_others() -> None:
    assert link_dests(None, [], D) == []
    assert link_dests(B, [A, B, C, D, ".ship-x", "trash"], D) == [B, C, A]
    assert link_dests(None, [A, B, C], D) == [C, B, A]
    assert link_dests(D, [A, D], D) == [A]  # shipping the live release again: compared with the others only
    assert link_dests(A, [A, B, C, "20261130-100000-000-0000"], D) == [A, C, B]


def test_identical_bytes_get_identical_mtimes_and_different_bytes_different_ones(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for tree in (one, two):
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "same.js").write_text("console.log(1)\n")
    (one / "changed.js").write_text("v1\n")
    (two / "changed.js").write_text("v2\n")
    (two / "link").symlink_to("/nowhere")
    os.utime(two / "sub" / "same.js", (1_800_000_000, 1_800_000_000))
    assert normalise_mtimes(one) == len("console.log(1)\n") + 3
    normalise_mtimes(two)
    same = [(tree / "sub" / "same.js").stat().st_mtime_ns for tree in (one, two)]
    assert same[0] == same[1] and MTIME_BASE * 10**9 <= same[0] < (MTIME_BASE + MTIME_SPAN) * 10**9
    assert (one / "changed.js").stat().st_mtime != (two / "changed.js").stat().st_mtime
    assert (two / "link").is_symlink()
    before = (one / "changed.js").stat().st_mtime_ns
    normalise_mtimes(one)  # stable
    assert (one / "changed.js").stat().st_mtime_ns == before


def test_the_apps_next_dir_keeps_its_mtimes_but_static(tmp_path: Path) -> None:
    """Next reads the mtimes under .next (an ISR page's age): they stay as built; .next/static is linked."""
    app = tmp_path / "release" / "apps" / "web"
    for sub in (".next/server/app", ".next/static/chunks", "node_modules/x"):
        (app / sub).mkdir(parents=True)
    files = [app / ".next/server/app/index.html", app / ".next/BUILD_ID", app / ".next/static/chunks/a.js",
             app / "node_modules/x/index.js", app / "server.js"]
    for file in files:
        file.write_text(file.name)
        os.utime(file, (1_800_000_000, 1_800_000_000))
    assert normalise_mtimes(tmp_path / "release", keep="apps/web/.next") == sum(len(f.name) for f in files)
    kept = {file.name for file in files if file.stat().st_mtime == 1_800_000_000}
    assert kept == {"index.html", "BUILD_ID"}
