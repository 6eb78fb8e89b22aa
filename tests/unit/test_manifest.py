"""Checks of a release on disk: symlinks that leave the release."""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.manifest import links_leaving


def make_release(tmp_path: Path) -> Path:
    release = tmp_path / "releases" / "r1"
    (release / "node_modules" / ".pnpm" / "next@16" / "node_modules" / "next").mkdir(parents=True)
    (release / "public").mkdir()
    (release / "public" / "hello.txt").write_text("hi")
    (release / ".next" / "static").mkdir(parents=True)
    return release


def test_links_inside_the_release_are_fine(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    (release / "node_modules" / "next").symlink_to(".pnpm/next@16/node_modules/next")  # pnpm's layout
    (release / "public" / "same.txt").symlink_to("hello.txt")
    (release / "public" / "absolute.txt").symlink_to(release / "public" / "hello.txt")
    (release / "public" / "dangling-inside").symlink_to("nowhere")
    assert links_leaving(release) == []


def test_links_that_resolve_outside_are_named_with_their_target(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (release / "public" / "leak.txt").symlink_to(outside)
    (release / "public" / "etc").symlink_to("/etc")  # a linked directory: not walked into, but named
    (release / ".next" / "static" / "up").symlink_to("../../../other")  # a post-build step's, relative
    (release / "public" / "via").symlink_to("leak.txt")  # inside, to a link that leaves
    assert links_leaving(release) == [
        (".next/static/up", "../../../other"),
        ("public/etc", "/etc"),
        ("public/leak.txt", str(outside)),
        ("public/via", "leak.txt"),
    ]


def test_allowed_links_are_the_ones_nextdeploy_made(tmp_path: Path) -> None:
    release = make_release(tmp_path)
    shared = tmp_path / "shared" / ".env.production"
    shared.parent.mkdir()
    shared.write_text("A=1")
    (release / ".env.production").symlink_to(shared)
    assert links_leaving(release, [release / ".env.production"]) == []
    assert links_leaving(release) == [(".env.production", str(shared))]
