"""The Server Actions key: generated once, stored 0600, given to builds and workers, scrubbed from
releases, never echoed (nextdeploy.release.secrets and the planners that carry it)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.errors import ConfigError
from nextdeploy.core.paths import DeployPaths
from nextdeploy.plans import pm2 as pm2_plan
from nextdeploy.release.secrets import (
    SERVER_ACTIONS_ENV,
    ensure_server_actions_key,
    files_containing,
    key_file,
    scrub_ops,
    scrubbed_manifest,
    secret_files,
    stored_server_actions_key,
)

KEY = base64.b64encode(bytes(range(32))).decode()


def config_for(tmp_path: Path, **security: str) -> object:
    data: dict[str, object] = {"app": {"name": "x", "source": "app"}, "server": {"root": str(tmp_path / "root")}}
    if security:
        data["security"] = security
    return parse_config(data, tmp_path)


def test_key_is_generated_once_and_stored_0600(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    paths = DeployPaths(tmp_path / "root")
    assert stored_server_actions_key(config, paths) is None  # type: ignore[arg-type]
    first = ensure_server_actions_key(config, paths)  # type: ignore[arg-type]
    assert len(base64.b64decode(first)) == 32
    assert stat.S_IMODE(key_file(paths).stat().st_mode) == 0o600
    assert ensure_server_actions_key(config, paths) == first  # type: ignore[arg-type]
    assert stored_server_actions_key(config, paths) == first  # type: ignore[arg-type]
    key_file(paths).chmod(0o644)
    ensure_server_actions_key(config, paths)  # type: ignore[arg-type]
    assert stat.S_IMODE(key_file(paths).stat().st_mode) == 0o600


def test_configured_key_wins_and_is_stored(tmp_path: Path) -> None:
    config = config_for(tmp_path, server_actions_key=KEY)
    paths = DeployPaths(tmp_path / "root")
    assert ensure_server_actions_key(config, paths) == KEY  # type: ignore[arg-type]
    assert key_file(paths).read_text().strip() == KEY


def test_a_corrupt_stored_key_is_reported_without_its_value(tmp_path: Path) -> None:
    paths = DeployPaths(tmp_path / "root")
    key_file(paths).parent.mkdir(parents=True)
    key_file(paths).write_text("c2hvcnQta2V5IQ==\n")
    with pytest.raises(ConfigError) as raised:
        ensure_server_actions_key(config_for(tmp_path), paths)  # type: ignore[arg-type]
    assert "c2hvcnQta2V5" not in raised.value.message + str(raised.value.hint)


def test_an_invalid_configured_key_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        config_for(tmp_path, server_actions_key="bm90LWEta2V5")
    assert "bm90LWEta2V5" not in " ".join([raised.value.message, *raised.value.details])


def test_ecosystem_reads_the_key_from_its_file(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    paths = DeployPaths(tmp_path / "root")
    key = ensure_server_actions_key(config, paths)  # type: ignore[arg-type]
    source = pm2_plan.ecosystem_source(config, paths, secret_files(paths))  # type: ignore[arg-type]
    assert key not in source
    assert f"app.env[{json.dumps(SERVER_ACTIONS_ENV)}] = fs.readFileSync({json.dumps(str(key_file(paths)))}" in source


MANIFEST = {"node": {"60abc": {"workers": {"app/action/page": {"moduleId": 1, "async": False}}}}, "edge": {},
            "encryptionKey": KEY}


def test_scrubbed_manifests_keep_everything_but_the_key() -> None:
    scrubbed = scrubbed_manifest(json.dumps(MANIFEST, indent=2), javascript=False)
    assert scrubbed is not None and KEY not in scrubbed
    assert json.loads(scrubbed) == {k: v for k, v in MANIFEST.items() if k != "encryptionKey"}
    javascript = "self.__RSC_SERVER_MANIFEST=" + json.dumps(json.dumps(MANIFEST, indent=2))
    scrubbed_js = scrubbed_manifest(javascript, javascript=True)
    assert scrubbed_js is not None and KEY not in scrubbed_js
    assert json.loads(json.loads(scrubbed_js.removeprefix("self.__RSC_SERVER_MANIFEST="))) == json.loads(scrubbed)
    assert scrubbed_manifest(scrubbed, javascript=False) is None  # nothing to do twice
    with pytest.raises(ValueError):
        scrubbed_manifest("window.x = 1", javascript=True)


def test_scrub_ops_and_leak_scan(tmp_path: Path) -> None:
    server = tmp_path / ".next" / "server"
    server.mkdir(parents=True)
    (server / "server-reference-manifest.json").write_text(json.dumps(MANIFEST))
    (server / "server-reference-manifest.js").write_text(
        "self.__RSC_SERVER_MANIFEST=" + json.dumps(json.dumps(MANIFEST)))
    ops = scrub_ops(server)
    assert len(ops) == 2 and all(KEY not in op.render() for op in ops)
    assert files_containing(tmp_path, KEY) == [".next/server/server-reference-manifest.js",
                                               ".next/server/server-reference-manifest.json"]
    from nextdeploy.host.executor import LocalExecutor
    LocalExecutor().apply_all(ops)
    assert files_containing(tmp_path, KEY) == []
    assert scrub_ops(server) == []


def test_leak_scan_skips_files_hard_linked_from_a_scanned_tree(tmp_path: Path) -> None:
    live, new = tmp_path / "live", tmp_path / "new"
    for tree in (live, new):
        (tree / "node_modules" / "a").mkdir(parents=True)
    (live / "node_modules" / "a" / "linked.js").write_text(f"k={KEY}")
    os.link(live / "node_modules" / "a" / "linked.js", new / "node_modules" / "a" / "linked.js")
    (new / "node_modules" / "a" / "copied.js").write_text(f"k={KEY}")
    os.link(new / "node_modules" / "a" / "copied.js", tmp_path / "elsewhere.js")  # linked, not from `live`
    assert files_containing(new, KEY) == ["node_modules/a/copied.js", "node_modules/a/linked.js"]
    assert files_containing(new, KEY, scanned=live) == ["node_modules/a/copied.js"]


def test_pm2_dump_and_build_dirs_are_made_private(tmp_path: Path) -> None:
    from nextdeploy.release.secrets import protect_pm2_dump
    home = tmp_path / "pm2"
    protect_pm2_dump(home)
    assert (home / "dump.pm2").read_text() == "[]"  # an empty process list: valid for `pm2 resurrect`
    (home / "dump.pm2").write_text('[{"env": {}}]')
    (home / "dump.pm2.bak").chmod(0o644)
    protect_pm2_dump(home)
    assert (home / "dump.pm2").read_text() == '[{"env": {}}]'
    assert {stat.S_IMODE((home / name).stat().st_mode) for name in ("dump.pm2", "dump.pm2.bak")} == {0o600}
    paths = DeployPaths(tmp_path / "root")
    for directory in (paths.builds_dir, paths.cache_dir):
        directory.mkdir(parents=True)
    ensure_server_actions_key(config_for(tmp_path), paths)  # type: ignore[arg-type]
    assert {stat.S_IMODE(d.stat().st_mode) for d in (paths.builds_dir, paths.cache_dir)} == {0o700}
