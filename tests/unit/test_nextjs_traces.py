"""Traces: parsing, mapping into the release, escape detection, include/exclude globs, the traced-mode
copy plan and the check of a release against its traces (nextdeploy.nextjs.traces / traced / prepare)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.nextjs.build import BuildOutput, inspect_build
from nextdeploy.nextjs.prepare import check_traced_files, exclude_targets, include_ops, required_paths
from nextdeploy.nextjs.traced import plan_traced_copy, server_js_source, traced_release_ops
from nextdeploy.nextjs.traces import (
    glob_matches,
    included_files,
    merge_traces,
    parse_trace,
    read_traces,
    reject_escaping,
    root_relative,
    trace_paths,
)
from nextdeploy.plans.ops import CopyFile, Symlink, WriteFile

ROOT = "/b/src"


@pytest.mark.parametrize(("folder", "entry", "expected"), [
    # The server trace lives in <app>/.next; its entries climb out of .next into node_modules.
    ("/b/src/.next", "../node_modules/next/package.json", "node_modules/next/package.json"),
    # A route trace: .next/server/app/api/health/route.js.nft.json names chunks beside it.
    ("/b/src/.next/server/app/api/health", "../../../chunks/x.js", ".next/server/chunks/x.js"),
    ("/b/src/.next/server/app", "page_client-reference-manifest.js",
     ".next/server/app/page_client-reference-manifest.js"),
    # Monorepo: app at apps/web, tracing root at the workspace root.
    ("/b/src/apps/web/.next", "../../../node_modules/.pnpm/a/index.js", "node_modules/.pnpm/a/index.js"),
    ("/b/src/apps/web/.next", "../../../packages/greeting/index.js", "packages/greeting/index.js"),
    # Leaving the root, however written.
    ("/b/src/.next", "../../etc/passwd", None),
    ("/b/src/.next", "../../src-evil/x", None),
    ("/b/src/.next", "/etc/passwd", None),
    ("/b/src/.next", "../node_modules/../../../etc/passwd", None),
    ("/b/src/.next", "..", None),
    ("/b/src/.next", "../", None),
    ("/b/src/.next", "", None),
])
def test_root_relative(folder: str, entry: str, expected: str | None) -> None:
    assert root_relative(folder, entry, ROOT) == expected


def test_parse_trace_with_symlinks() -> None:
    text = json.dumps({"version": 1, "files": ["../node_modules/react", "../node_modules/.pnpm/react@19/x.js"],
                       "symlinks": [[0, "../node_modules/.pnpm/react@19/node_modules/react"]],
                       "fileHashes": {}})
    trace = parse_trace(text, "/b/src/.next")
    merged = merge_traces([trace], ROOT)
    assert merged.files == {"node_modules/react", "node_modules/.pnpm/react@19/x.js"}
    assert merged.symlinks == {"node_modules/react": "node_modules/.pnpm/react@19/node_modules/react"}
    assert merged.escaping == []


@pytest.mark.parametrize("text", ['{"version": 1}', "[]", '{"files": ["a"], "symlinks": [[5, "b"]]}',
                                  '{"files": ["a"], "symlinks": [["0", "b"]]}'])
def test_parse_trace_rejects_non_traces(text: str) -> None:
    with pytest.raises(ValueError):
        parse_trace(text, "/b/src/.next")


def test_a_crafted_trace_is_rejected_with_its_paths() -> None:
    crafted = parse_trace(json.dumps({"files": ["../node_modules/ok.js", "../../../../home/me/.ssh/id_rsa"],
                                      "symlinks": [[0, "../../../outside"]]}), "/b/src/.next")
    merged = merge_traces([crafted], ROOT)
    assert merged.files == {"node_modules/ok.js"}
    assert merged.escaping == ["../../../../home/me/.ssh/id_rsa", "../node_modules/ok.js -> ../../../outside"]
    with pytest.raises(ReleaseError) as raised:
        reject_escaping(merged, Path(ROOT))
    assert "outside the tracing root" in raised.value.message and raised.value.hint
    assert any("id_rsa" in line for line in raised.value.details)


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("content/**", "content/a/b.md", True),
    ("content", "content/a/b.md", True),  # a folder takes its files
    ("content/*.md", "content/a/b.md", False),
    ("content/*.md", "content/b.md", True),
    ("**/picocolors.js", "node_modules/.pnpm/next@1/node_modules/next/dist/lib/picocolors.js", True),
    ("**/picocolors.js", "picocolors.js", True),
    ("apps/web/.env", "apps/web/.env", True),
    ("apps/*/.env", "apps/web/.env.local", False),
    ("data/file?.json", "data/file1.json", True),
    ("data/file[0-9].json", "data/filex.json", False),
    ("data/[!a]*.json", "data/b.json", True),
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("*.txt", "dir/x.txt", False),
])
def test_glob_matches(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


def test_included_files_skip_node_modules_unless_named(tmp_path: Path) -> None:
    for relative in ("content/a.md", "content/sub/b.md", "node_modules/x/data.md", "content/node_modules/y.md",
                     ".git/HEAD", "other.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    assert included_files(tmp_path, ["content/**/*.md"]) == ["content/a.md", "content/sub/b.md"]
    assert included_files(tmp_path, ["**/*.md"]) == ["content/a.md", "content/sub/b.md"]
    assert included_files(tmp_path, ["node_modules/x/*.md"]) == ["node_modules/x/data.md"]
    assert included_files(tmp_path, ["missing/**"]) == []


# --- a small fake build on disk -----------------------------------------------------------------------------


def link_to_next(app_path: str) -> str:
    """What pnpm writes at <app>/node_modules/next."""
    if app_path == ".":
        return ".pnpm/next@1/node_modules/next"
    return "../" * (len(Path(app_path).parts) + 1) + "node_modules/.pnpm/next@1/node_modules/next"


def fake_build(tmp_path: Path, app_path: str = ".") -> tuple[SourceLayout, BuildOutput]:
    """A build dir shaped like a pnpm Next.js build: traces, a linked package, a route chunk."""
    source_root = tmp_path / "src"
    app = source_root / app_path if app_path != "." else source_root
    next_dir = app / ".next"
    prefix = "" if app_path == "." else "../" * len(Path(app_path).parts)
    for relative, text in {
        "node_modules/.pnpm/next@1/node_modules/next/package.json": '{"engines": {"node": ">=20.9.0"}}',
        "node_modules/.pnpm/next@1/node_modules/next/dist/server.js": "// next",
    }.items():
        (source_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (source_root / relative).write_text(text)
    (app / "node_modules").mkdir(parents=True, exist_ok=True)
    os.symlink(link_to_next(app_path), app / "node_modules" / "next")
    (next_dir / "server" / "app").mkdir(parents=True)
    (next_dir / "server" / "chunks").mkdir(parents=True)
    (next_dir / "server" / "chunks" / "page.js").write_text("// chunk")
    (next_dir / "static" / "chunks").mkdir(parents=True)
    (next_dir / "static" / "chunks" / "a.js").write_text("// client")
    (next_dir / "BUILD_ID").write_text("x")
    (next_dir / "cache").mkdir()
    config = {"outputFileTracingRoot": str(source_root), "distDir": ".next", "images": {"unoptimized": False}}
    (next_dir / "required-server-files.json").write_text(json.dumps({
        "config": config, "appDir": str(app), "relativeAppDir": "" if app_path == "." else app_path,
        "files": [".next/BUILD_ID"],
    }))
    up = prefix + "../"
    (next_dir / "next-server.js.nft.json").write_text(json.dumps({"version": 1, "files": [
        f"{up}node_modules/.pnpm/next@1/node_modules/next/package.json",
        f"{up}node_modules/.pnpm/next@1/node_modules/next/dist/server.js",
        "../node_modules/next",
    ], "symlinks": [[2, f"{up}node_modules/.pnpm/next@1/node_modules/next"]]}))
    (next_dir / "next-minimal-server.js.nft.json").write_text(json.dumps({"files": ["../../../../etc/passwd"]}))
    (next_dir / "server" / "app" / "page.js.nft.json").write_text(json.dumps({"files": ["../chunks/page.js"]}))
    source = SourceLayout(source_root, app_path)
    return source, inspect_build(source)


@pytest.mark.parametrize("app_path", [".", "apps/web"])
def test_read_traces_of_a_build(tmp_path: Path, app_path: str) -> None:
    _, build = fake_build(tmp_path, app_path)
    app_rel = "" if app_path == "." else "apps/web/"
    assert build.app_rel == app_rel.rstrip("/")
    # The minimal server's trace is ignored (it would escape here).
    assert all(path.name != "next-minimal-server.js.nft.json" for path in trace_paths(build.next_dir))
    traces = read_traces(build.next_dir, build.tracing_root)
    assert traces.escaping == []
    assert traces.files == {
        "node_modules/.pnpm/next@1/node_modules/next/package.json",
        "node_modules/.pnpm/next@1/node_modules/next/dist/server.js",
        f"{app_rel}node_modules/next",
        f"{app_rel}.next/server/chunks/page.js",
    }
    assert f"{app_rel}.next/BUILD_ID" in required_paths(build, traces)


@pytest.mark.parametrize("app_path", [".", "apps/web"])
def test_traced_plan_and_ops(tmp_path: Path, app_path: str) -> None:
    _, build = fake_build(tmp_path, app_path)
    traces = read_traces(build.next_dir, build.tracing_root)
    plan = plan_traced_copy(build.tracing_root, traces.files | set(traces.symlinks))
    app_rel = "" if app_path == "." else "apps/web/"
    assert plan.links == {f"{app_rel}node_modules/next": link_to_next(app_path)}
    assert plan.escaping == [] and plan.missing == []
    layout = ReleaseLayout(tmp_path / "release", build.app_rel)
    ops = traced_release_ops(build, traces, layout, tmp_path / "launcher.cjs")
    writes = [op for op in ops if isinstance(op, WriteFile)]
    assert [op.path for op in writes] == [layout.server_js]
    copied = {op.dst for op in ops if isinstance(op, CopyFile)}
    assert layout.release_dir / "node_modules/.pnpm/next@1/node_modules/next/dist/server.js" in copied
    # .next is copied whole, so its chunk is not copied twice; its build cache is not copied at all.
    assert layout.next_dir / "server" / "chunks" / "page.js" not in copied
    rendered = "\n".join(op.render() for op in ops)
    assert "/cache" not in rendered.replace("/.next/cache", "")
    assert ".next/cache" not in rendered
    links = [op for op in ops if isinstance(op, Symlink)]
    assert [op.link for op in links] == [layout.app_dir / "node_modules" / "next"]
    # Executing the plan yields a release whose link resolves to the copied package.
    from nextdeploy.host.executor import LocalExecutor
    (tmp_path / "launcher.cjs").write_text("// launcher")
    LocalExecutor().apply_all(ops)
    assert json.loads((layout.app_dir / "node_modules" / "next" / "package.json").read_text())["engines"]
    check_traced_files(build, traces, layout, set())


def test_traced_plan_rejects_links_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "node_modules").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.pem").write_text("secret")
    os.symlink(str(tmp_path / "secret"), root / "node_modules" / "evil")
    os.symlink("../../secret", root / "node_modules" / "evil2")
    plan = plan_traced_copy(root, ["node_modules/evil/key.pem", "node_modules/evil2", "node_modules/ok.js"])
    assert sorted(entry.split(" ")[0] for entry in plan.escaping) == ["node_modules/evil", "node_modules/evil2"]
    assert plan.missing == ["node_modules/ok.js"]
    assert plan.files == set()


def test_missing_traced_files_fail_and_name_the_exclude(tmp_path: Path) -> None:
    source, build = fake_build(tmp_path)
    traces = read_traces(build.next_dir, build.tracing_root)
    layout = ReleaseLayout(tmp_path / "release")
    from nextdeploy.host.executor import LocalExecutor
    (tmp_path / "launcher.cjs").write_text("// launcher")
    LocalExecutor().apply_all(traced_release_ops(build, traces, layout, tmp_path / "launcher.cjs"))
    excluded = exclude_targets(build, source.source_root, ["**/dist/server.js"], layout)
    assert excluded == ["node_modules/.pnpm/next@1/node_modules/next/dist/server.js"]
    (layout.release_dir / excluded[0]).unlink()
    with pytest.raises(ReleaseError) as raised:
        check_traced_files(build, traces, layout, set(excluded))
    assert "1 file(s) named by the build's traces are missing" in raised.value.message
    assert "removed by [release] exclude" in raised.value.message
    assert raised.value.details == [f"  {excluded[0]}"]


def test_include_adds_files_and_refuses_outside_the_tracing_root(tmp_path: Path) -> None:
    source, build = fake_build(tmp_path, "apps/web")
    (source.source_root / "content").mkdir()
    (source.source_root / "content" / "post.md").write_text("# post")
    layout = ReleaseLayout(tmp_path / "release", "apps/web")
    ops = include_ops(build, source.source_root, ["content/*.md"], layout)
    assert [(op.src, op.dst) for op in ops if isinstance(op, CopyFile)] == [
        (source.source_root / "content" / "post.md", layout.release_dir / "content" / "post.md")]
    # With the tracing root at the app, the workspace's content is outside it.
    narrowed = BuildOutput(build.app_dir, build.app_dir, "", build.next_config, build.required_files)
    with pytest.raises(ReleaseError, match="outside the tracing root"):
        include_ops(narrowed, source.source_root, ["content/*.md"], ReleaseLayout(tmp_path / "r2"))


def test_app_outside_its_tracing_root_is_refused(tmp_path: Path) -> None:
    source, _ = fake_build(tmp_path, "apps/web")
    required = source.next_dir / "required-server-files.json"
    data = json.loads(required.read_text())
    data["config"]["outputFileTracingRoot"] = str(tmp_path / "elsewhere")
    required.write_text(json.dumps(data))
    with pytest.raises(ReleaseError, match="not inside its tracing root"):
        inspect_build(source)


def test_server_js_matches_standalone_shape() -> None:
    source = server_js_source({"distDir": ".next", "output": "standalone", "deploymentId": "x"})
    assert '"distDir":"./.next"' in source
    assert "process.env.__NEXT_PRIVATE_STANDALONE_CONFIG = JSON.stringify(nextConfig)" in source
    assert "require('next/dist/server/lib/start-server')" in source
    assert "process.chdir(__dirname)" in source


def test_extra_server_trace_is_cached_per_lockfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nextdeploy.nextjs import traced

    source, build = fake_build(tmp_path)
    lockfile = source.source_root / "pnpm-lock.yaml"
    lockfile.write_text("lockfileVersion: '9.0'\n")
    calls: list[str] = []

    def fake_trace(node: str, build: BuildOutput) -> None:
        calls.append(node)
        (build.next_dir / "nextdeploy-server.js.nft.json").write_text(json.dumps(
            {"version": 1, "files": ["../node_modules/.pnpm/next@1/node_modules/next/dist/server.js"]}))

    monkeypatch.setattr(traced, "trace_server_entries", fake_trace)
    cache = tmp_path / "cache"
    assert traced.ensure_server_entries_trace("node", build, cache, lockfile) is False
    assert traced.ensure_server_entries_trace("node", build, cache, lockfile) is True
    assert len(calls) == 1
    # Another lockfile: traced again. A cached trace naming a file that is gone: traced again.
    lockfile.write_text("lockfileVersion: '9.0'\n# changed\n")
    assert traced.ensure_server_entries_trace("node", build, cache, lockfile) is False
    (source.source_root / "node_modules/.pnpm/next@1/node_modules/next/dist/server.js").unlink()
    assert traced.ensure_server_entries_trace("node", build, cache, lockfile) is False
    assert traced.ensure_server_entries_trace("node", build, cache, None) is False  # no lockfile: no cache
    assert len(calls) == 4


def _release_with_links(tmp_path: Path, links: dict[str, str]) -> tuple[BuildOutput, ReleaseLayout]:
    """The fake build with extra links in its pnpm layout, each traced as resolution passed it (a ``files``
    entry and a ``symlinks`` pair), assembled into a release the way traced mode (and standalone) copies
    links: as links, whatever they point at."""
    _, build = fake_build(tmp_path)
    trace_file = build.next_dir / "next-server.js.nft.json"
    data = json.loads(trace_file.read_text())
    for link, target in links.items():
        (build.tracing_root / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, build.tracing_root / link)
        data["symlinks"].append([len(data["files"]), target])
        data["files"].append(f"../{link}")
    trace_file.write_text(json.dumps(data))
    layout = ReleaseLayout(tmp_path / "release")
    from nextdeploy.host.executor import LocalExecutor
    (tmp_path / "launcher.cjs").write_text("// launcher")
    traces = read_traces(build.next_dir, build.tracing_root)
    LocalExecutor().apply_all(traced_release_ops(build, traces, layout, tmp_path / "launcher.cjs"))
    return build, layout


HOISTED = "node_modules/.pnpm/node_modules/semver"


def test_a_hoisted_link_left_dangling_is_not_a_missing_file(tmp_path: Path) -> None:
    # pnpm hoists every package into node_modules/.pnpm/node_modules; standalone keeps the traced link but
    # not the package behind it when the server never loads a file of it. That release serves.
    build, layout = _release_with_links(tmp_path, {HOISTED: "../semver@7.6.0/node_modules/semver"})
    assert os.path.islink(layout.release_dir / HOISTED)
    assert not os.path.exists(layout.release_dir / HOISTED)
    check_traced_files(build, read_traces(build.next_dir, build.tracing_root), layout, set())


def test_a_traced_file_behind_a_dangling_link_is_missing(tmp_path: Path) -> None:
    build, layout = _release_with_links(tmp_path, {HOISTED: "../semver@7.6.0/node_modules/semver"})
    traces = read_traces(build.next_dir, build.tracing_root)
    traces.files.add(f"{HOISTED}/index.js")  # a file the server loads through the link: it must be there
    with pytest.raises(ReleaseError) as raised:
        check_traced_files(build, traces, layout, set())
    assert raised.value.details == [f"  {HOISTED}/index.js"]


def test_a_traced_link_leading_out_of_the_release_is_refused(tmp_path: Path) -> None:
    # Standalone copies a link as written: an absolute one into the build host (a workspace package linked
    # by absolute path) leaves the release, existing or not. Refused whether or not its target exists.
    (tmp_path / "outside").mkdir()
    build, layout = _release_with_links(tmp_path, {"node_modules/.pnpm/node_modules/a": "../a@1/node_modules/a",
                                                   "node_modules/.pnpm/node_modules/b": "../b@1/node_modules/b"})
    for name, target in (("a", tmp_path / "outside"), ("b", tmp_path / "gone")):
        (layout.release_dir / "node_modules/.pnpm/node_modules" / name).unlink()
        os.symlink(str(target), layout.release_dir / "node_modules/.pnpm/node_modules" / name)
    with pytest.raises(ReleaseError) as raised:
        check_traced_files(build, read_traces(build.next_dir, build.tracing_root), layout, set())
    assert raised.value.message == "2 traced link(s) of the release lead outside it"
    assert raised.value.details == [f"  node_modules/.pnpm/node_modules/a -> {tmp_path / 'outside'}",
                                    f"  node_modules/.pnpm/node_modules/b -> {tmp_path / 'gone'}"]
