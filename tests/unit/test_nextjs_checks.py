"""Pure checks around a release: Node engines, next/image + sharp, ISR with several instances, the
shared image cache, smoke routes, and the deploymentId warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextdeploy.core.config import HealthConfig, parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ExitCode, PreflightError
from nextdeploy.core.paths import ReleaseLayout, SourceLayout
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import LocalExecutor
from nextdeploy.host.probe import ProbeResult
from nextdeploy.nextjs import smoke
from nextdeploy.nextjs.caches import image_cache_ops, isr_warning, uses_isr
from nextdeploy.nextjs.envcheck import (
    built_node_problem,
    image_optimization_on,
    imports_next_image,
    next_engines,
    node_engine_problem,
    revalidates,
    revalidates_in_source,
    runtime_node_problem,
    uses_next_image,
)
from nextdeploy.release.builder import _inspect_build


@pytest.mark.parametrize(("node", "engines", "problem"), [
    ("20.20.2", ">=20.9.0", False),
    ("v20.8.0", ">=20.9.0", True),
    ("18.17.0", "^18.18.0 || ^19.8.0 || >= 20.0.0", True),
    ("22.0.0", None, False),
    ("22.0.0", "not a range", False),  # never block a deploy on a range we cannot read
])
def test_node_engine_problem(node: str, engines: str | None, problem: bool) -> None:
    result = node_engine_problem(node, engines)
    assert (result is not None) is problem
    if result:
        assert node.lstrip("v") in result and str(engines) in result


def test_a_live_release_built_on_another_node_than_pm2_runs_is_told() -> None:
    assert built_node_problem("22.23.5", "22.23.5") is None
    assert built_node_problem(None, "20.20.2") is None and built_node_problem("22.23.5", None) is None
    assert built_node_problem("22.23.5", "20.20.2") == (
        "the workers run on Node 22.23.5, but the live release was built with Node 20.20.2: deploy again to "
        "build it on 22.23.5")


def test_a_pm2_daemon_on_another_node_version_is_a_problem_with_its_fix() -> None:
    home = Path("/srv/h/.pm2")
    # Another binary of the same version (a copy, another prefix) runs the release just the same.
    assert runtime_node_problem(home, "/usr/bin/node", "20.20.2", "/opt/node/bin/node", "20.20.2") is None
    upgraded = runtime_node_problem(home, "/usr/bin/node", "20.20.2", "/opt/node22/bin/node", "22.23.5")
    assert upgraded is not None and upgraded.exit_code == ExitCode.TOOL_MISSING
    assert upgraded.message == (
        "PM2's daemon (PM2_HOME=/srv/h/.pm2) runs Node 20.20.2 (/usr/bin/node), but node on PATH is 22.23.5 "
        "(/opt/node22/bin/node): the workers would run on 20.20.2, not on the Node the release is built and "
        "checked with")
    assert upgraded.hint is not None and "`PM2_HOME=/srv/h/.pm2 pm2 update`" in upgraded.hint
    assert upgraded.hint.endswith("or put Node 20.20.2 first on PATH")
    gone = runtime_node_problem(home, "/home/u/.nvm/versions/node/v20.1.0/bin/node", None, "/usr/bin/node", "22.1.0")
    assert gone is not None and "which no longer exists" in gone.message and "pm2 update" in str(gone.hint)


def test_next_engines_read_from_the_release(tmp_path: Path) -> None:
    package = tmp_path / "node_modules" / "next" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text('{"engines": {"node": ">=20.9.0"}}')
    assert next_engines(tmp_path) == ">=20.9.0"
    assert next_engines(tmp_path / "nothing") is None


@pytest.mark.parametrize(("text", "expected"), [
    ('import Image from "next/image";', True),
    ("import Image from 'next/legacy/image'", True),
    ('const Image = require("next/image")', True),
    ('const { default: Image } = await import("next/image")', True),
    ('import Link from "next/link"; // next/image is not used', False),
    ('import x from "next/image-extra"', False),
])
def test_imports_next_image(text: str, expected: bool) -> None:
    assert imports_next_image(text) is expected


def test_uses_next_image_skips_dependencies_and_build_output(tmp_path: Path) -> None:
    (tmp_path / "node_modules" / "lib").mkdir(parents=True)
    (tmp_path / "node_modules" / "lib" / "x.js").write_text('import I from "next/image"')
    (tmp_path / ".next").mkdir()
    (tmp_path / ".next" / "y.js").write_text('import I from "next/image"')
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "page.tsx").write_text("export default function P() { return null }")
    assert not uses_next_image(tmp_path)
    (tmp_path / "packages" / "ui").mkdir(parents=True)
    (tmp_path / "packages" / "ui" / "logo.jsx").write_text('import Image from "next/image"')
    assert uses_next_image(tmp_path)


@pytest.mark.parametrize(("images", "on"), [
    ({"unoptimized": False, "loader": "default"}, True),
    ({"unoptimized": True}, False),
    ({"loader": "custom", "loaderFile": "./loader.js"}, False),
    ({}, True),
])
def test_image_optimization_on(images: dict[str, object], on: bool) -> None:
    assert image_optimization_on({"images": images}) is on


ISR_PAGES = {"routes": {"/blog/first": {"initialRevalidateSeconds": 60}, "/_not-found": {}}, "dynamicRoutes": {}}
NO_ISR = {"routes": {"/_not-found": {}, "/_global-error": {}}, "dynamicRoutes": {}}


def test_isr_warning_only_with_several_instances_and_per_process_caches() -> None:
    default = {"cacheHandler": None, "cacheHandlers": {}, "cacheMaxMemorySize": 52428800}
    warning = isr_warning(default, ISR_PAGES, instances=2)
    assert warning and "per process" in warning and "cacheMaxMemorySize: 0" in warning
    assert isr_warning(default, ISR_PAGES, instances=1) is None
    assert isr_warning(default, NO_ISR, instances=4) is None
    shared = {"cacheHandler": "/app/cache-handler.js", "cacheMaxMemorySize": 0}
    assert isr_warning(shared, ISR_PAGES, instances=4) is None
    memory = isr_warning({**shared, "cacheMaxMemorySize": 1000}, ISR_PAGES, instances=4)
    assert memory and "cacheMaxMemorySize is 1000" in memory
    assert uses_isr({"cacheComponents": True}, NO_ISR)
    assert uses_isr({}, {"routes": {}, "dynamicRoutes": {"/blog/[slug]": {"fallbackRevalidate": 300}}})


STATIC_PAGES = {"routes": {"/about": {"initialRevalidateSeconds": False}, "/blog/first": {
    "initialRevalidateSeconds": False, "srcRoute": "/blog/[slug]"}, "/_not-found": {}},
    "dynamicRoutes": {"/blog/[slug]": {"fallback": False, "fallbackRevalidate": False}}}


def test_no_isr_warning_for_pages_prerendered_once_and_never_revalidated() -> None:
    # Issue 20: the warning printed on every deploy of an app whose prerendered pages never change.
    default = {"cacheHandler": None, "cacheHandlers": {}, "cacheMaxMemorySize": 52428800}
    assert isr_warning(default, STATIC_PAGES, instances=2) is None
    # ... unless its source revalidates them (on demand) or caches fetches for a time.
    warning = isr_warning(default, STATIC_PAGES, instances=2, revalidates_in_source=lambda: True)
    assert warning and "per process" in warning
    asked: list[bool] = []
    assert isr_warning(default, ISR_PAGES, instances=2, revalidates_in_source=lambda: asked.append(True) or True)
    assert asked == []  # the build told: the source is not read


@pytest.mark.parametrize(("text", "expected"), [
    ('import { revalidatePath } from "next/cache";\nrevalidatePath("/blog");', True),
    ("await revalidateTag ('posts', 'max')", True),
    ("updateTag(`user-${id}`)", True),
    ("await res.revalidate('/blog/' + slug)", True),
    ("fetch(url, { next: { revalidate: 3600 } })", True),
    ("export const revalidate = false; fetch(url, { next: { revalidate: 0 } })", False),
    ("// nothing here about caching", False),
])
def test_revalidates(text: str, expected: bool) -> None:
    assert revalidates(text) is expected


def test_revalidates_in_source_skips_dependencies(tmp_path: Path) -> None:
    (tmp_path / "node_modules" / "next").mkdir(parents=True)
    dependency = tmp_path / "node_modules" / "next" / "cache.js"
    dependency.write_text("export function revalidatePath() {}\nrevalidatePath(p)")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "page.tsx").write_text("export default function Page() { return null }")
    assert not revalidates_in_source(tmp_path)
    (tmp_path / "app" / "actions.ts").write_text('"use server";\nexport async function save() { revalidatePath("/") }')
    assert revalidates_in_source(tmp_path)


def test_image_cache_link_ops(tmp_path: Path) -> None:
    layout = ReleaseLayout(tmp_path / "releases" / "r1", "apps/web")
    rendered = [op.render() for op in image_cache_ops(tmp_path / "shared", layout)]
    assert rendered[0] == f"mkdir -p {tmp_path}/shared/cache/images"
    assert rendered[-1].startswith(f"ln -sfn {tmp_path}/shared/cache/images "
                                   f"{tmp_path}/releases/r1/apps/web/.next/cache/images.tmp")


PAGE = """<!DOCTYPE html><html data-dpl-id="r1"><head>
<link rel="preload" as="script" href="https://cdn.example.com/_next/static/chunks/cdn.js"/>
<link rel="stylesheet" href="/_next/static/css/app.css?dpl=r1&amp;v=2"/>
<script src="/_next/static/chunks/main.js?dpl=r1" async=""></script></head></html>"""


def test_first_static_asset_is_same_origin_and_unescaped() -> None:
    assert smoke.first_static_asset(PAGE) == "/_next/static/css/app.css?dpl=r1&v=2"
    assert smoke.first_static_asset("<html>no assets</html>") is None
    assert smoke.first_static_asset('<base href="/"><img src="/docs/_next/static/media/x.png">') == \
        "/docs/_next/static/media/x.png"  # basePath


def test_smoke_problem() -> None:
    assert smoke.smoke_problem("/", ProbeResult(200)) is None
    assert smoke.smoke_problem("/", ProbeResult(404)) is None  # only 5xx and no answer fail
    assert smoke.smoke_problem("/", ProbeResult(500)) == "GET / answered 500"
    assert smoke.smoke_problem("/", ProbeResult(None, error="ConnectionRefusedError")) == \
        "GET /: ConnectionRefusedError"


def test_run_smoke_requests_routes_then_one_asset(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"/": ProbeResult(200, PAGE, headers={"content-type": "text/html; charset=utf-8"}),
               "/blog/first": ProbeResult(200, "{}", headers={"content-type": "application/json"}),
               "/_next/static/css/app.css?dpl=r1&v=2": ProbeResult(200)}
    asked: list[str] = []

    def fake_get(host: str, port: int, path: str, timeout: float) -> ProbeResult:
        asked.append(path)
        return answers.get(path, ProbeResult(404))

    monkeypatch.setattr(smoke, "http_get", fake_get)
    health = HealthConfig(smoke=["/blog/first", "/"])
    assert smoke.run_smoke(health, 1234) == ["GET /blog/first -> 200", "GET / -> 200",
                                              "GET /_next/static/css/app.css?dpl=r1&v=2 -> 200"]
    answers["/_next/static/css/app.css?dpl=r1&v=2"] = ProbeResult(404)
    with pytest.raises(PreflightError, match="static asset"):
        smoke.run_smoke(health, 1234)
    answers["/"] = ProbeResult(500, "boom", headers={"content-type": "text/html"})
    with pytest.raises(PreflightError, match="GET / answered 500") as raised:
        smoke.run_smoke(health, 1234)
    assert raised.value.hint
    assert smoke.run_smoke(HealthConfig(), 1234) == []


def test_next_config_deployment_id_warns_that_it_wins(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "x", "dependencies": {"next": "16.4.6"}}')
    (app / "pnpm-lock.yaml").write_text("")
    (app / "next.config.js").write_text('module.exports = { output: "standalone", deploymentId: "fixed" }')
    config = parse_config({"app": {"name": "x", "source": str(app)}, "server": {"root": str(tmp_path / "root")}},
                          tmp_path)
    printed: list[str] = []
    reporter = Reporter(force_plain=True)
    reporter._line = printed.append  # type: ignore[method-assign]
    ctx = Context(config, LocalExecutor(), reporter)
    _inspect_build(ctx, SourceLayout(app))
    assert any("deploymentId" in line and "wins" in line for line in printed), printed
    (app / "next.config.js").write_text('module.exports = { output: "standalone" }')
    printed.clear()
    _inspect_build(ctx, SourceLayout(app))
    assert not any("deploymentId" in line for line in printed)


@pytest.mark.parametrize(("policy", "uses_image", "loads", "outcome"), [
    ("fail", True, False, "error"),
    ("warn", True, False, "warning"),
    ("off", True, False, "nothing"),
    ("fail", False, False, "nothing"),  # next/image not imported: sharp is not needed
    ("fail", True, True, "nothing"),
])
def test_sharp_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, uses_image: bool, loads: bool,
                      outcome: str) -> None:
    from nextdeploy.core.errors import ReleaseError
    from nextdeploy.nextjs import envcheck, prepare
    from nextdeploy.nextjs.build import BuildOutput

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "page.jsx").write_text('import Image from "next/image";' if uses_image else "")
    config = parse_config({"app": {"name": "x", "source": "src"}, "server": {"root": "r"},
                           "release": {"sharp_check": policy}}, tmp_path)
    printed: list[str] = []
    reporter = Reporter(force_plain=True)
    reporter._line = printed.append  # type: ignore[method-assign]
    ctx = Context(config, LocalExecutor(), reporter)
    def fake_probe(node: str, app_dir: Path, timeout: float = 30) -> envcheck.SharpProbe:
        return envcheck.SharpProbe(loads, "@img/sharp-linux-x64", None if loads else "Could not load sharp")

    monkeypatch.setattr(envcheck, "probe_sharp", fake_probe)
    build = BuildOutput(tmp_path, tmp_path, "", {"images": {"unoptimized": False, "loader": "default"}})
    layout = ReleaseLayout(tmp_path / "release")
    if outcome == "error":
        with pytest.raises(ReleaseError, match="sharp does not load") as raised:
            prepare._check_sharp(ctx, build, SourceLayout(tmp_path), layout)
        assert "@img/sharp-linux-x64" in str(raised.value.hint)
        return
    prepare._check_sharp(ctx, build, SourceLayout(tmp_path), layout)
    assert any("sharp" in line for line in printed) is (outcome == "warning")
