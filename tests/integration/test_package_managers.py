"""Apps install and build with the package manager they pin, installed by nextdeploy when missing, on the PATH
of their own scripts, and never with the Server Actions key in the install's environment.

Fixtures: ``tests/fixtures/pnpm8-workspace`` is ``tests/fixtures/monorepo`` pinning pnpm 8.15.6 (with
corepack's hash) and a v6 lockfile written by pnpm 8, which pnpm 10 and later refuse.
``tests/fixtures/yarn-berry`` is the example app on yarn 3.8.7 with ``nodeLinker: node-modules``. Both run
``tests/fixtures/probe.cjs`` from their postinstall and build scripts: it records the version of the
package manager their scripts find on PATH and whether the key is in their environment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.support.site import REPO, Site

from nextdeploy.core.errors import ExitCode

pytestmark = pytest.mark.integration

FIXTURES = REPO / "tests" / "fixtures"
# Yarn's package cache, kept between test runs like pnpm's store (a cold one downloads ~100 MB).
YARN_CACHE_SEED = REPO / ".tools" / "yarn-berry-cache"


def overlay(fixture: str, destination: Path) -> None:
    """Lay a fixture's files (and the probe) over an app copied to ``destination``."""
    shutil.copytree(FIXTURES / fixture, destination, dirs_exist_ok=True)
    (destination / "scripts").mkdir(exist_ok=True)
    shutil.copyfile(FIXTURES / "probe.cjs", destination / "scripts" / "probe.cjs")


def link_new_files(source: Path, destination: Path) -> None:
    """Hard-link into ``destination`` the files of ``source`` it lacks (yarn's cache archives are immutable)."""
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        target = destination / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)


def probe_records(probe: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in probe.read_text().splitlines()] if probe.exists() else []


def test_a_pnpm8_workspace_is_built_with_the_pnpm_it_pins(site: Site) -> None:
    mono = site.base / "mono"
    shutil.copytree(FIXTURES / "monorepo", mono, ignore=shutil.ignore_patterns("node_modules", ".next",
                                                                               "pnpm-lock.yaml"))
    overlay("pnpm8-workspace", mono)
    probe = site.base / "probe.jsonl"
    site.write_config(app={"source": str(mono), "path": "apps/web", "build_env": {"NEXTDEPLOY_TEST_PROBE": str(probe)}})

    result = site.deploy().expect_ok()
    prefix = site.root / "tools" / "pnpm-8.15.6"
    assert f"install pnpm 8.15.6 with npm into {prefix} (package.json pins pnpm@8.15.6; once)" in result.output
    assert "install dependencies (pnpm 8.15.6, frozen lockfile)" in result.output
    # The app's own scripts found that pnpm on PATH; the key reached the build, not the install.
    assert probe_records(probe) == [
        {"step": "install", "manager": "pnpm", "version": "8.15.6", "key": False},
        {"step": "build", "manager": "pnpm", "version": "8.15.6", "key": True},
    ]
    assert "from a workspace package" in site.get("/")[1]

    # The next deploy installs no pnpm: the dry run shows the exact install the deploy would run.
    plan = site.nextdeploy("deploy", "--dry-run").expect_ok().stdout
    bin_dir = prefix / "node_modules" / ".bin"
    assert f'PATH={bin_dir}:"$PATH" NEXT_TELEMETRY_DISABLED=1' in plan
    assert f"{bin_dir}/pnpm install --frozen-lockfile) >>" in plan
    assert " install --no-audit --no-fund" not in plan  # no npm install of a package manager
    install_line = next(line for line in plan.splitlines() if "install --frozen-lockfile" in line)
    assert "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY" not in install_line


def test_a_package_manager_problem_stops_the_deploy_before_the_export(site: Site, tmp_path: Path) -> None:
    site.app_dir.joinpath("pnpm-lock.yaml").unlink()
    overlay("yarn-berry", site.app_dir)
    # A PATH with node and pm2 but no yarn and no npm to install it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("node", "pm2"):
        found = shutil.which(tool, path=f"{REPO / '.tools' / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}")
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    result = site.nextdeploy("deploy", env={"PATH": str(bin_dir)})
    assert result.code == ExitCode.TOOL_MISSING, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: yarn 3.8.7 is needed (package.json pins yarn@3.8.7) and was not found, nor npm to install it "
        "(fix: install Node.js with npm (nextdeploy then installs yarn 3.8.7 itself), or install yarn 3.8.7 and "
        "put it on PATH)")
    assert "export source" not in result.output and "Traceback" not in result.output

    # A pin its lockfile cannot be installed with: refused before anything is exported or installed.
    assert deploy_pinning(site, "yarn@4.5.0", ExitCode.PROJECT).startswith(
        "error: package.json pins yarn@4.5.0, but yarn.lock (a yarn 2+ lockfile, __metadata version 6) can only "
        "be installed by yarn 3 (fix: run `yarn install` with yarn 4.5.0")
    # A pinned version npm cannot find: npm's own words, before the export; no half-installed tool left.
    assert deploy_pinning(site, "yarn@3.99.0", ExitCode.TOOL_MISSING).startswith(
        "error: could not install yarn 3.99.0 (package.json pins yarn@3.99.0) with npm: npm error code ETARGET; "
        "npm error notarget No matching version found for @yarnpkg/cli-dist@3.99.0")
    assert list((site.root / "tools").iterdir()) == []


def deploy_pinning(site: Site, pin: str, code: ExitCode) -> str:
    """Deploy with package.json's packageManager set to ``pin``; it must fail with ``code`` before the export.
    Returns the error line."""
    package = json.loads((site.app_dir / "package.json").read_text())
    (site.app_dir / "package.json").write_text(json.dumps({**package, "packageManager": pin}))
    result = site.nextdeploy("deploy")
    assert result.code == code, result.output
    assert "export source" not in result.output and "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


def test_a_yarn_berry_app_deploys_and_reuses_its_dependencies(site: Site) -> None:
    site.app_dir.joinpath("pnpm-lock.yaml").unlink()
    overlay("yarn-berry", site.app_dir)
    probe = site.base / "probe.jsonl"
    site.write_config(app={"source": str(site.app_dir), "build_env": {"NEXTDEPLOY_TEST_PROBE": str(probe)}})
    yarn_cache = site.root / "cache" / "yarn-berry"
    link_new_files(YARN_CACHE_SEED, yarn_cache)

    first = site.deploy().expect_ok()
    assert "install dependencies (yarn 3.8.7, frozen lockfile)" in first.output
    assert site.version() == "v1"
    assert probe_records(probe) == [
        {"step": "install", "manager": "yarn", "version": "3.8.7", "key": False},
        {"step": "build", "manager": "yarn", "version": "3.8.7", "key": True},
    ]
    # Yarn's cache is kept under the deploy root, between builds.
    assert list((yarn_cache / "cache").glob("next-npm-16.4.6-*.zip"))
    link_new_files(yarn_cache, YARN_CACHE_SEED)

    second = site.deploy("v2").expect_ok()
    assert "install dependencies: unchanged, reusing the last build's node_modules" in second.output
    assert "with npm into" not in second.output  # yarn 3.8.7 is installed once
    assert site.version() == "v2"
    assert [record["step"] for record in probe_records(probe)] == ["install", "build", "build"]

    plan = site.nextdeploy("deploy", "--dry-run").expect_ok().stdout
    assert f"YARN_GLOBAL_FOLDER={yarn_cache}" in plan
    assert "/node_modules/.bin/yarn install --immutable) >>" in plan and "--frozen-lockfile" not in plan
