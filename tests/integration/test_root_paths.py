"""Issue 21: a deploy root with a space goes live; a release never links out of itself; a root is ours
before anything is deleted in it."""

from __future__ import annotations

import json

import pytest

from nextdeploy.core.errors import ExitCode
from support.site import Site

pytestmark = pytest.mark.integration


def test_a_root_with_a_space_goes_live_and_links_out_of_the_release_are_refused(site: Site) -> None:
    # PM2 runs a script path holding a space as `bash -c <path>`: the workers never ran the launcher.
    site.root = site.base / "deploy root"
    site.write_config(server={"root": str(site.root)}, health={"stable_for": 1})
    site.deploy().expect_ok()  # a first deploy: preflight, then PM2 starts the app
    first = site.current()
    assert site.version() == "v1"

    # A file of the source's public/ that is a link to a file outside the source: it would be served. And a
    # post-build step that links a file of the host into .next/static.
    secret = site.base / "secret.txt"
    secret.write_text("not for the web\n")
    (site.app_dir / "public" / "leak.txt").symlink_to(secret)
    package_json = site.app_dir / "package.json"
    scripts = package_json.read_text()
    package_json.write_text(scripts.replace('"next build"', '"next build && ln -s /etc/hostname .next/static/host"'))
    result = site.deploy("v2")
    assert result.code == ExitCode.RELEASE_INVALID, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the release would hold 2 symlinks that leave it: .next/static/host -> "
                           f"/etc/hostname, public/leak.txt -> {secret} "), last
    assert "(fix: replace the link in the source" in last, last
    assert site.current() == first and site.version() == "v1"
    assert site.get("/leak.txt")[0] == 404
    [failed] = [r for r in site.releases() if r["status"] == "failed"]
    assert not (site.root / "releases" / failed["id"]).exists()

    # Links inside the release are fine (pnpm's node_modules are full of them), and a code-only change goes
    # live by the held cut-over: new workers started by PM2 from the same ecosystem, under the space.
    (site.app_dir / "public" / "leak.txt").unlink()
    package_json.write_text(scripts)
    (site.app_dir / "public" / "same.txt").symlink_to("hello.txt")
    site.deploy("v3").expect_ok()
    assert site.version() == "v3"
    assert site.get("/same.txt")[:2] == site.get("/hello.txt")[:2]
    status = site.nextdeploy("status", "--json").json()
    assert [w["release"] for w in status["workers"]] == [site.current()] * 2, json.dumps(status)


def test_a_root_that_is_not_ours_is_refused_and_nothing_in_it_deleted(site: Site) -> None:
    # Someone points [server] root at a directory in use: builds/ and trash/ there are not ours to delete.
    site.root.mkdir()
    (site.root / "index.html").write_text("<h1>my site</h1>")
    (site.root / "builds").mkdir()
    (site.root / "builds" / "precious.txt").write_text("keep")
    (site.root / "trash").mkdir()
    (site.root / "trash" / "maybe-not").write_text("keep too")
    before = sorted(p.relative_to(site.root) for p in site.root.rglob("*"))
    for command in (("deploy",), ("deploy", "--dry-run"), ("rollback",), ("start",)):
        result = site.nextdeploy(*command)
        assert result.code == ExitCode.HOST_PATH, result.output
        last = result.stderr.strip().splitlines()[-1]
        assert last == (f"error: [server] root {site.root} is a non-empty directory nextdeploy did not create (it "
                        "holds builds, index.html, trash); nextdeploy deletes files in its root, so it does not "
                        "use it (fix: point [server] root at a new or empty directory (nextdeploy creates it), e.g. "
                        f"{site.root / 'nextdeploy'})"), last
    assert sorted(p.relative_to(site.root) for p in site.root.rglob("*")) == before

    # A root an earlier nextdeploy made (its release log, no mark yet) is adopted, and used.
    site.root = site.base / "old-root"
    (site.root / "builds" / "20261101-000000-000-dead").mkdir(parents=True)
    (site.root / "releases.jsonl").write_text(
        json.dumps({"event": "building", "release": "20261101-000000-000-dead", "ts": "2026-11-01T00:00:00.000Z"})
        + "\n")
    site.write_config(server={"root": str(site.root)})
    result = site.nextdeploy("rollback")
    assert result.code == ExitCode.ROLLBACK_FAILED, result.output  # nothing to roll back to, but it ran
    assert f"marked {site.root} as a nextdeploy root (made by an earlier version)" in result.output
    assert (site.root / ".nextdeploy-root").is_file()
    assert not any((site.root / "builds").iterdir())  # its interrupted build's leftovers cleaned
