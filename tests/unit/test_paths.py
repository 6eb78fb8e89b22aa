"""Path computation for flat and monorepo layouts."""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.paths import DeployPaths, ReleaseLayout, SourceLayout


def test_deploy_root_layout() -> None:
    paths = DeployPaths(Path("/srv/hello"))
    assert paths.current_link == Path("/srv/hello/current")
    assert paths.release_dir("r1") == Path("/srv/hello/releases/r1")
    assert paths.log_file == Path("/srv/hello/releases.jsonl")
    assert paths.build_log("r1") == Path("/srv/hello/logs/build-r1.log")


def test_flat_release() -> None:
    layout = ReleaseLayout(Path("/srv/h/releases/r1"))
    assert layout.server_js == Path("/srv/h/releases/r1/server.js")
    assert layout.server_rel == "server.js"
    assert layout.static_dir == Path("/srv/h/releases/r1/.next/static")
    assert layout.public_dir == Path("/srv/h/releases/r1/public")
    assert layout.launcher_file == Path("/srv/h/releases/r1/.nextdeploy/launcher.cjs")


def test_monorepo_release() -> None:
    layout = ReleaseLayout(Path("/srv/h/releases/r1"), "apps/web")
    assert layout.server_js == Path("/srv/h/releases/r1/apps/web/server.js")
    assert layout.server_rel == "apps/web/server.js"
    assert layout.static_dir == Path("/srv/h/releases/r1/apps/web/.next/static")
    assert layout.public_dir == Path("/srv/h/releases/r1/apps/web/public")
    # The launcher and manifest stay at the release root whatever the app path.
    assert layout.manifest_file == Path("/srv/h/releases/r1/.nextdeploy/manifest.json")


def test_source_layouts() -> None:
    flat = SourceLayout(Path("/b/src"))
    assert flat.standalone_dir == Path("/b/src/.next/standalone")
    mono = SourceLayout(Path("/b/src"), "apps/web")
    assert mono.static_dir == Path("/b/src/apps/web/.next/static")
    assert mono.public_dir == Path("/b/src/apps/web/public")
