"""Issue 5, items 1, 2 and 4: deployment ids, static assets of recent releases kept (skew protection)
across deploys and a rollback, the shared image cache. Real builds of examples/hello (each version has
its own client chunk: the counter shows the version)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from support.site import Site

pytestmark = pytest.mark.integration

# Also matches URLs inside the page's inline flight data, where quotes are escaped (\").
_CHUNK = re.compile(r"""["'](/_next/static/[^"'?\s\\]+?\.(?:js|css))(\?[^"'\s\\]*)?\\?["']""")


def asset_urls(page: str) -> dict[str, str]:
    """Static asset path -> the URL the browser would request (with its ?dpl= query)."""
    return {match[1]: match[1] + (match[2] or "").replace("&amp;", "&") for match in _CHUNK.finditer(page)}


def own_static(site: Site, release_id: str) -> set[str]:
    data = json.loads((site.root / "releases" / release_id / ".nextdeploy" / "static-files.json").read_text())
    return {f"/_next/static/{name}" for name in data["files"]}


def statuses(site: Site, urls: dict[str, str]) -> dict[str, int]:
    return {path: site.get(url)[0] for path, url in urls.items()}


def deploy(site: Site, version: str) -> str:
    result = site.deploy(version)
    assert result.code == 0, result.output
    release_id = site.current()
    assert release_id is not None
    return release_id


def total_files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def shared_files(earlier: Path, later: Path, under: str) -> tuple[int, int]:
    """(files under ``later/under`` that are the same inode as in ``earlier``, all regular files there)."""
    shared = total = 0
    for path in (later / under).rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        total += 1
        twin = earlier / path.relative_to(later)
        shared += twin.is_file() and os.path.samefile(path, twin)
    return shared, total


def test_old_tabs_keep_their_assets_within_the_window_and_lose_them_after(site: Site) -> None:
    site.write_config(skew={"keep_assets_of": 2})
    a = deploy(site, "v1")
    page_a = site.get("/")[1]
    # Item 1: the release id is the deployment id, on the page and on every asset URL.
    assert f'data-dpl-id="{a}"' in page_a
    urls_a = asset_urls(page_a)
    assert urls_a and all(url.endswith(f"?dpl={a}") for url in urls_a.values()), urls_a

    b = deploy(site, "v2")
    page_b = site.get("/")[1]
    assert f'data-dpl-id="{b}"' in page_b
    only_a = set(urls_a) - own_static(site, b)
    assert only_a, "v1 and v2 share every chunk: the test would prove nothing"
    # A page loaded from A keeps working on B: every asset it names answers 200.
    assert set(statuses(site, urls_a).values()) == {200}, statuses(site, urls_a)
    # Linked, not copied: the file in B is the same inode as in A.
    for path in only_a:
        name = path.removeprefix("/_next/static/")
        in_a = site.root / "releases" / a / ".next" / "static" / name
        assert os.path.samefile(in_a, site.root / "releases" / b / ".next" / "static" / name)
    # Issue 4 (disk per release): B hard-links A's unchanged dependency files; its own build output is its own.
    shared, total = shared_files(site.root / "releases" / a, site.root / "releases" / b, "node_modules")
    assert total > 100 and shared / total > 0.9, (shared, total)
    assert shared_files(site.root / "releases" / a, site.root / "releases" / b, ".next/server") == (0, total_files(
        site.root / "releases" / b / ".next" / "server"))
    # Issue 20: so are its unchanged public files (Next only reads them); a changed one is the new release's own.
    assert shared_files(site.root / "releases" / a, site.root / "releases" / b, "public") == (1, 1)
    (site.app_dir / "public" / "hello.txt").write_text("changed in v3\n")

    c = deploy(site, "v3")
    assert shared_files(site.root / "releases" / b, site.root / "releases" / c, "public") == (0, 1)
    assert site.get("/hello.txt")[1] == "changed in v3\n"
    assert (site.root / "releases" / b / "public" / "hello.txt").read_text() != "changed in v3\n"
    urls_b = asset_urls(page_b)
    # K=2: C serves B's assets, A has left the window.
    assert set(statuses(site, urls_b).values()) == {200}
    gone = set(only_a) - own_static(site, c) - own_static(site, b)
    assert gone
    after_c = statuses(site, urls_a)
    assert {after_c[path] for path in gone} == {404}, after_c
    assert {after_c[path] for path in set(urls_a) - gone} <= {200}

    # Rollback to B: C's open tabs keep working on B, A's assets are no longer bridged into B.
    page_c = site.get("/")[1]
    rolled = site.nextdeploy("rollback")
    assert rolled.code == 0, rolled.output
    assert site.current() == b
    assert set(statuses(site, asset_urls(page_c)).values()) == {200}
    after_rollback = statuses(site, urls_a)
    assert {after_rollback[path] for path in gone} == {404}, after_rollback

    # Item 4: every release's image cache is the shared one.
    for release_id in (a, b, c):
        link = site.root / "releases" / release_id / ".next" / "cache" / "images"
        assert link.is_symlink() and Path(os.readlink(link)) == site.root / "shared" / "cache" / "images"
