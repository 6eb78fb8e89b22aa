"""Project inspection: package manager, monorepo root, standalone, health route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextdeploy.core.errors import ProjectError
from nextdeploy.release.project import find_home_page, find_lockfile, inspect_project

REPO = Path(__file__).resolve().parents[2]


def make_app(directory: Path, config: str = 'module.exports = { output: "standalone" }', **package: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.json").write_text(json.dumps({"name": "web", "dependencies": {"next": "16.4.6"},
                                                        **package}))
    (directory / "next.config.js").write_text(config)
    return directory


@pytest.mark.parametrize(("lockfile", "manager"), [("pnpm-lock.yaml", "pnpm"), ("package-lock.json", "npm"),
                                                   ("yarn.lock", "yarn")])
def test_package_manager_from_lockfile(tmp_path: Path, lockfile: str, manager: str) -> None:
    app = make_app(tmp_path)
    (app / lockfile).write_text("")
    info = inspect_project(app)
    assert info.lockfile is not None and info.lockfile.package_manager == manager


def test_package_manager_field_breaks_ties(tmp_path: Path) -> None:
    app = make_app(tmp_path, packageManager="yarn@1.22.0")
    (app / "package-lock.json").write_text("")
    (app / "yarn.lock").write_text("")
    assert find_lockfile(app, app).package_manager == "yarn"  # type: ignore[union-attr]
    assert find_lockfile(app, app, prefer="npm").package_manager == "npm"  # type: ignore[union-attr]


def test_monorepo_lockfile_and_workspace_root(tmp_path: Path) -> None:
    (tmp_path / "pnpm-workspace.yaml").write_text("packages: ['apps/*']\n")
    (tmp_path / "pnpm-lock.yaml").write_text("")
    app = make_app(tmp_path / "apps" / "web", config="module.exports = { output: 'standalone', "
                   "outputFileTracingRoot: require('path').join(__dirname, '../../') }")
    info = inspect_project(app)
    assert info.source_root == tmp_path and info.app_path == "apps/web"
    assert info.workspace_root == tmp_path and info.sets_tracing_root
    assert info.lockfile is not None and info.lockfile.install_dir == tmp_path


def test_real_fixtures() -> None:
    hello = inspect_project(REPO / "examples" / "hello")
    assert hello.standalone and hello.health_route is not None and hello.app_path == "."
    assert hello.lockfile is not None and hello.lockfile.package_manager == "pnpm"
    mono = inspect_project(REPO / "tests" / "fixtures" / "monorepo" / "apps" / "web")
    assert mono.app_path == "apps/web" and mono.sets_tracing_root


def test_detects_missing_standalone_and_health(tmp_path: Path) -> None:
    info = inspect_project(make_app(tmp_path, config="module.exports = {}"))
    assert not info.standalone and info.health_route is None and info.lockfile is None


@pytest.mark.parametrize("package", [None, {"name": "x", "dependencies": {"react": "19"}}])
def test_not_a_next_app(tmp_path: Path, package: dict[str, object] | None) -> None:
    if package is not None:
        (tmp_path / "package.json").write_text(json.dumps(package))
    with pytest.raises(ProjectError, match=r"not a Next\.js app"):
        inspect_project(tmp_path)


@pytest.mark.parametrize(("files", "home"), [
    (["app/page.tsx", "app/about/page.tsx"], "app/page.tsx"),
    (["src/app/page.js"], "src/app/page.js"),
    (["app/(site)/(home)/page.mdx", "app/(site)/blog/page.tsx"], "app/(site)/(home)/page.mdx"),
    (["pages/index.jsx", "pages/api/health.ts"], "pages/index.jsx"),
    (["src/pages/index.ts"], "src/pages/index.ts"),
    (["app/about/page.tsx", "app/page.module.css", "pages/about.tsx"], None),  # no page serves "/"
])
def test_the_page_that_serves_the_root(tmp_path: Path, files: list[str], home: str | None) -> None:
    app = make_app(tmp_path / "web")
    for name in files:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("export default function Page() { return null }\n")
    assert find_home_page(app) == (app / home if home else None)
    assert inspect_project(app).home_page == find_home_page(app)
