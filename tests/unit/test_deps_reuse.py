"""Reusing the last build's node_modules: what the key covers, and a cache that is whole or absent."""

from __future__ import annotations

from pathlib import Path

from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.paths import SourceLayout
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.plans import deps
from nextdeploy.plans.ops import Remove, Rename, WriteFile
from nextdeploy.release.builder import _take_dependencies


def make_monorepo(root: Path) -> None:
    for rel in ("", "apps/web", "packages/ui"):
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "package.json").write_text(f'{{"name": "{rel or "root"}"}}')
        (root / rel / "node_modules" / "dep").mkdir(parents=True)
        (root / rel / "node_modules" / "dep" / "package.json").write_text("{}")  # never an input
    (root / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    (root / "apps" / "web" / ".next").mkdir()
    (root / "apps" / "web" / ".next" / "package.json").write_text("{}")  # build output: never an input


def key_of(root: Path, build_env: dict[str, str] | None = None) -> str:
    inputs = deps.scan_source(root).inputs
    return deps.deps_key(inputs, "pnpm", "/bin/sh", "/bin/sh", build_env or {})


def test_scan_finds_every_node_modules_and_only_real_inputs(tmp_path: Path) -> None:
    make_monorepo(tmp_path)
    scan = deps.scan_source(tmp_path)
    assert scan.node_modules == ["apps/web/node_modules", "node_modules", "packages/ui/node_modules"]
    assert sorted(scan.inputs) == ["apps/web/package.json", "package.json", "packages/ui/package.json",
                                   "pnpm-lock.yaml"]


def test_the_key_changes_with_any_install_input_and_nothing_else(tmp_path: Path) -> None:
    make_monorepo(tmp_path)
    key = key_of(tmp_path)
    (tmp_path / "apps" / "web" / "page.jsx").write_text("code only")
    (tmp_path / "node_modules" / "dep" / "package.json").write_text('{"changed": 1}')
    assert key_of(tmp_path) == key
    assert key_of(tmp_path, {"SHARP_IGNORE_GLOBAL_LIBVIPS": "1"}) != key
    (tmp_path / "packages" / "ui" / "package.json").write_text('{"name": "ui", "version": "2.0.0"}')
    assert key_of(tmp_path) != key
    key = key_of(tmp_path)
    (tmp_path / ".npmrc").write_text("node-linker=hoisted\n")
    assert key_of(tmp_path) != key
    inputs = deps.scan_source(tmp_path).inputs
    assert deps.deps_key(inputs, "npm", "/bin/sh", "/bin/sh", {}) != deps.deps_key(inputs, "pnpm", "/bin/sh",
                                                                                   "/bin/sh", {})


def test_hand_on_then_take_moves_everything_and_the_key_guards_the_cache(tmp_path: Path) -> None:
    first, second, cache = tmp_path / "b1" / "src", tmp_path / "b2" / "src", tmp_path / "cache" / "deps"
    make_monorepo(first)
    scan = deps.scan_source(first)
    ops = deps.hand_on_ops(first, scan.node_modules, "K", cache, tmp_path / "b1" / "trash", cache_exists=False)
    assert isinstance(ops[-1], Rename) and ops[-1].dst == cache  # the key is written before, in staging
    assert isinstance(ops[-2], WriteFile) and ops[-2].path.name == "key"
    executor = LocalExecutor()
    executor.apply_all(ops)
    assert deps.scan_source(first).node_modules == []
    assert deps.cached_dirs(cache, "other key") is None
    dirs = deps.cached_dirs(cache, "K")
    assert dirs == scan.node_modules

    second.mkdir(parents=True)
    take = deps.take_ops(cache, dirs, second)
    assert take[0] == Remove(cache / "key")  # first: a half-taken cache is no cache
    executor.apply_all(take)
    assert (second / "packages" / "ui" / "node_modules" / "dep" / "package.json").is_file()
    assert deps.cached_dirs(cache, "K") is None

    # The next hand-on replaces the emptied cache; the old one goes to the build dir's trash.
    executor.apply_all(deps.hand_on_ops(second, dirs, "K2", cache, tmp_path / "b2" / "trash", cache_exists=True))
    assert deps.cached_dirs(cache, "K2") == dirs
    assert (tmp_path / "b2" / "trash" / "previous-deps").is_dir()


def test_a_damaged_cache_is_no_cache(tmp_path: Path) -> None:
    cache = tmp_path / "deps"
    (cache / "tree" / "node_modules").mkdir(parents=True)
    (cache / "key").write_text("K\n")
    (cache / "dirs").write_text("node_modules\napps/web/node_modules\n")  # the second one is missing
    assert deps.cached_dirs(cache, "K") is None
    (cache / "dirs").write_text("node_modules\n")
    assert deps.cached_dirs(cache, "K") == ["node_modules"]


def test_a_cache_that_cannot_be_moved_in_means_a_fresh_install(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "x", "source": "app"}, "server": {"root": str(tmp_path / "root")}},
                          tmp_path)
    printed: list[str] = []
    reporter = Reporter(force_plain=True)
    reporter._line = printed.append  # type: ignore[method-assign]
    ctx = Context(config, LocalExecutor(), reporter)
    built = tmp_path / "b1" / "src"
    make_monorepo(built)
    dirs = deps.scan_source(built).node_modules
    LocalExecutor().apply_all(deps.hand_on_ops(built, dirs, "K", ctx.paths.deps_cache_dir, tmp_path / "trash",
                                               cache_exists=False))
    source = tmp_path / "b2" / "src"
    source.mkdir(parents=True)
    (source / "packages").mkdir()
    (source / "packages" / "ui").write_text("a file where the package dir should be")  # the last move fails
    assert not _take_dependencies(ctx, SourceLayout(source), "K")
    assert any("could not reuse the cached node_modules" in line for line in printed), printed
    assert printed[-1].startswith("FAILED install dependencies: unchanged, reusing"), printed  # not "ok"
    assert not (source / "node_modules").exists() and not (source / "apps" / "web" / "node_modules").exists()
    assert deps.cached_dirs(ctx.paths.deps_cache_dir, "K") is None  # and the void cache is never used
