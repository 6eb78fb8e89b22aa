"""Issue 23, item 4: the static files of a release that appears beside a running one are served by it
(cross-host version skew). Two real builds of examples/hello (v1 and v2: a code-only change), made once
for the module by local deploys."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import have_node_tools
from support.site import Site

pytestmark = pytest.mark.integration


@dataclass
class Built:
    site: Site
    a: str  # v1's release id
    b: str  # v2's: the same app with one changed line of code

    def release(self, release_id: str) -> Path:
        return self.site.root / "releases" / release_id


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    site = Site(tmp_path_factory.mktemp("site"))
    try:
        site.write_config(skew={"keep_assets_of": 1})  # each release serves its own static files only
        site.deploy("v1").expect_ok()
        a = site.current()
        site.deploy("v2").expect_ok()
        b = site.current()
        assert a and b and a < b
        yield Built(site, a, b)
    finally:
        site.close()


def own_static(release: Path) -> set[str]:
    return set(json.loads((release / ".nextdeploy" / "static-files.json").read_text())["files"])


def test_a_running_release_serves_the_static_files_of_a_newer_release_that_appears_beside_it(built: Built) -> None:
    """v1 live, v2's release dir under releases/ but not live: v1's workers answer v2's chunks (200, the
    right bytes, cacheable as immutable), including when v2's dir appears after they started."""
    site = built.site
    site.nextdeploy("rollback").expect_ok()  # v1 live again, its workers started anew
    assert site.current() == built.a and site.version() == "v1"
    only_b = sorted(own_static(built.release(built.b)) - own_static(built.release(built.a)))
    chunk = next(name for name in only_b if name.endswith(".js"))
    assert not (built.release(built.a) / ".next" / "static" / chunk).exists()  # nothing bridged into v1
    url = f"/_next/static/{chunk}"
    expected = (built.release(built.b) / ".next" / "static" / chunk).read_text()

    # v2's dir gone: v1 answers 404, as Next does for any file it does not have.
    aside = site.base / "aside"
    aside.mkdir()
    os.rename(built.release(built.b), aside / built.b)
    try:
        assert site.get(url)[0] == 404
    finally:
        os.rename(aside / built.b, built.release(built.b))
    # It appears after v1's workers started: every worker serves its files (several requests reach both).
    for _ in range(6):
        status, body, headers = site.get(f"{url}?dpl={built.b}")
        assert status == 200 and body == expected
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["content-type"].startswith("application/javascript")
        assert headers["x-nextdeploy-release"] == built.a and headers["x-nextdeploy-asset-of"] == built.b
    # v1's own files are still Next's; a name no release has is still 404; no path escapes releases/.
    own_a = next(name for name in sorted(own_static(built.release(built.a))) if name.endswith(".js"))
    assert "x-nextdeploy-asset-of" not in site.get(f"/_next/static/{own_a}")[2]
    assert site.get("/_next/static/chunks/no-such-chunk.js")[0] == 404
    assert site.get(f"/_next/static/..%2F..%2F..%2F{built.b}%2F.nextdeploy%2Fmanifest.json")[0] == 404
    # An older release's files are not served by a newer one (they leave the skew window).
    site.nextdeploy("rollback", "--to", built.b).expect_ok()
    only_a = sorted(own_static(built.release(built.a)) - own_static(built.release(built.b)))
    assert site.get(f"/_next/static/{only_a[0]}")[0] == 404
