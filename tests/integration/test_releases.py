"""Issue 2: real builds become immutable releases that run on their own; bad inputs change nothing live."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.host.probe import listen_port
from nextdeploy.host.procs import live_processes
from support.site import REPO, Site, tool_env

pytestmark = pytest.mark.integration


def serve_release_directly(release_dir: Path, app_rel: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """``node server.js`` straight from a release, outside PM2 and the launcher: is it self-contained?"""
    port = listen_port()
    env = {**tool_env(), "PORT": str(port), "HOSTNAME": "127.0.0.1"}
    server = subprocess.Popen(["node", "server.js"], cwd=release_dir / app_rel, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2).read()
            return server, port
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError("the release did not serve on its own")


def fetch(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def assert_release_serves(release_dir: Path, app_rel: str, page_text: str, public_file: str) -> None:
    server, port = serve_release_directly(release_dir, app_rel)
    try:
        status, html = fetch(port, "/")
        assert status == 200 and page_text in html
        chunks = re.findall(r'(/_next/static/[^"?]+\.js)', html)
        assert chunks, "the page references no static chunks"
        for chunk in set(chunks):
            assert fetch(port, chunk)[0] == 200, chunk
        assert fetch(port, "/api/health")[1].startswith('{"status":"ok"')
        assert fetch(port, f"/{public_file}")[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_example_release_is_complete_and_self_contained(site: Site) -> None:
    result = site.deploy()
    assert result.code == 0, result.output
    release_id = site.current()
    assert release_id is not None
    release_dir = site.root / "releases" / release_id
    manifest = json.loads((release_dir / ".nextdeploy" / "manifest.json").read_text())
    assert manifest["id"] == release_id and manifest["server"] == "server.js"
    assert manifest["next_version"] == "16.4.6" and manifest["node_version"].startswith("20.")
    assert manifest["files"] > 500 and manifest["bytes"] > 10_000_000
    # pnpm's layout survives: node_modules/next is still a relative symlink, not a copy.
    assert (release_dir / "node_modules" / "next").is_symlink()
    assert not (release_dir / ".nextdeploy-unfinished").exists()
    # No build cache in the release: only the link to the shared image cache (issue 5).
    assert [path.name for path in (release_dir / ".next" / "cache").iterdir()] == ["images"]
    assert (release_dir / ".next" / "cache" / "images").is_symlink()
    # The deployment id reached the build, so asset URLs carry it.
    assert f"dpl={release_id}" in site.get("/")[1]
    assert_release_serves(release_dir, "", "build version", "hello.txt")
    # The build dir is gone; the build log and .next/cache are kept outside the release.
    assert not any((site.root / "builds").iterdir())
    assert (site.root / "logs" / f"build-{release_id}.log").exists()
    assert (site.root / "cache" / "next" / "root").is_dir()
    # Its node_modules wait in the cache for the next build with the same install inputs.
    assert (site.root / "cache" / "deps" / "dirs").read_text().split() == ["node_modules"]
    assert (site.root / "cache" / "deps" / "tree" / "node_modules" / ".pnpm").is_dir()
    listed = site.releases()
    assert [(r["id"], r["status"], r["current"]) for r in listed] == [(release_id, "active", True)]
    assert {"id", "status", "current", "created_at", "revision"} <= set(listed[0])


def test_monorepo_release_puts_server_at_the_app_path(site: Site) -> None:
    mono = site.base / "mono"
    shutil.copytree(REPO / "tests" / "fixtures" / "monorepo", mono,
                    ignore=shutil.ignore_patterns("node_modules", ".next"))
    site.write_config(app={"source": str(mono), "path": "apps/web"})
    result = site.deploy()
    assert result.code == 0, result.output
    release_dir = site.root / "releases" / str(site.current())
    assert (release_dir / "apps" / "web" / "server.js").is_file()
    assert (release_dir / "apps" / "web" / ".next" / "static").is_dir()
    assert json.loads((release_dir / ".nextdeploy" / "manifest.json").read_text())["app_rel"] == "apps/web"
    assert "from a workspace package" in site.get("/")[1]
    assert_release_serves(release_dir, "apps/web", "from a workspace package", "mono.txt")


def test_dry_run_prints_the_plan_and_changes_nothing(site: Site) -> None:
    result = site.nextdeploy("deploy", "--dry-run")
    assert result.code == 0, result.output
    for expected in ("pnpm install --frozen-lockfile", "pnpm run build", "ln -sfn releases/",
                     "pm2 start", "launcher.cjs", "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY=***",
                     "stays healthy for 4 s", "Node against next's engines"):
        assert expected in result.stdout, expected
    # Issue 20: the commands that really run: pm2 with its PM2_HOME, the binaries found, no `cp --exclude`.
    tools = REPO / ".tools" / "node_modules" / ".bin"
    assert f"PM2_HOME={site.pm2_home} {tools}/pm2 start " in result.stdout, result.stdout
    assert f"{tools}/pnpm install --frozen-lockfile" in result.stdout, result.stdout
    assert "rsync -a --exclude=node_modules" in result.stdout and "cp -a --exclude" not in result.stdout
    assert " install --no-audit --no-fund" not in result.stdout  # pnpm and pm2 are found: nothing to install first
    assert not site.root.exists()


def expect_failure(result_code: int, output: str, code: ExitCode, *fragments: str) -> None:
    assert result_code == code, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "(fix: " in last, last
    for fragment in fragments:
        assert fragment in output, (fragment, output)


def test_bad_inputs_fail_clearly_and_change_nothing_live(site: Site) -> None:
    site.deploy().expect_ok()
    live = site.current()

    def still_live() -> None:
        assert site.current() == live
        assert site.version() == "v1"

    missing = site.nextdeploy("deploy", "-c", str(site.base / "nope.toml"))
    expect_failure(missing.code, missing.output, ExitCode.CONFIG, "no config file")

    good_config = site.config_path.read_text()
    site.config_path.write_text(good_config.replace("[releases]", "[releases]\nkepp = 3"))
    expect_failure(*_run(site), ExitCode.CONFIG, "releases.kepp: unknown key")
    site.config_path.write_text(good_config.replace(f"port = {site.port}", 'port = "eighty"')
                                .replace("instances = 2", "instances = -1"))
    expect_failure(*_run(site), ExitCode.CONFIG, "server.port", "server.instances", "2 invalid settings")
    site.config_path.write_text(good_config)

    not_an_app = site.base / "not-an-app"
    not_an_app.mkdir()
    site.write_config(app={"source": str(not_an_app)})
    expect_failure(*_run(site), ExitCode.PROJECT, "not a Next.js app")
    still_live()

    no_lock = site.base / "no-lock"
    shutil.copytree(site.app_dir, no_lock)
    (no_lock / "pnpm-lock.yaml").unlink()
    site.write_config(app={"source": str(no_lock)})
    expect_failure(*_run(site), ExitCode.PROJECT, "no lockfile")
    still_live()

    no_standalone = site.base / "no-standalone"
    shutil.copytree(site.app_dir, no_standalone)
    (no_standalone / "next.config.mjs").write_text("export default {};\n")
    site.write_config(app={"source": str(no_standalone)})
    expect_failure(*_run(site), ExitCode.PROJECT, "no standalone output", 'output: "standalone"')
    still_live()

    site.write_config()
    (site.app_dir / "app" / "page.jsx").write_text("export default function Page() { return <main>; }\n")
    result = site.deploy()
    expect_failure(result.code, result.output, ExitCode.BUILD_FAILED, "the build failed", "full log:")
    still_live()
    site.set_version("v1")

    # A build that hangs (an open handle, a fetch that never returns) is stopped with all it started.
    hung_marker = f"sleep {900 + site.port % 97}"  # a command line no other test runs
    site.write_config(app={"build_command": f"echo hanging; {hung_marker} & {hung_marker}", "build_timeout": 2})
    started = time.monotonic()
    result = site.deploy()
    expect_failure(result.code, result.output, ExitCode.BUILD_FAILED, "did not finish within 2 s",
                   "[app] build_timeout", "hanging")
    assert time.monotonic() - started < 30
    # The broken build before kept its node_modules (the install was fine): no install here.
    assert "reusing the last build's node_modules" in result.output, result.output
    assert not [pid for pid, _, command in live_processes() if hung_marker in command]
    still_live()

    blocker = site.base / "a-file"
    blocker.write_text("")
    site.write_config(server={"root": str(blocker / "root")})
    expect_failure(*_run(site), ExitCode.HOST_PATH, "cannot create")

    site.write_config()
    statuses = {r["status"] for r in site.releases() if not r["current"]}
    assert statuses <= {"failed"}, site.releases()
    assert not any((site.root / "builds").iterdir())


def _run(site: Site) -> tuple[int, str]:
    result = site.nextdeploy("deploy")
    return result.code, result.output


def test_a_failed_install_or_build_step_says_failed(site: Site) -> None:
    """Issue 20, item 7: the failed step's progress line says FAILED, never ``ok`` (no Next.js build here)."""
    package = json.loads((site.app_dir / "package.json").read_text())
    package["dependencies"]["left-pad"] = "1.3.0"  # not in the lockfile: the frozen install fails
    (site.app_dir / "package.json").write_text(json.dumps(package))
    result = site.deploy()
    assert result.code == ExitCode.BUILD_FAILED, result.output
    failed_install = r"^FAILED install dependencies \(pnpm [0-9.]+, frozen lockfile\) \("
    assert re.search(failed_install, result.stdout, re.M), result.output
    assert not re.search(r"^ok +install dependencies", result.stdout, re.M), result.output

    site.set_version("v1")
    shutil.copyfile(REPO / "examples" / "hello" / "package.json", site.app_dir / "package.json")
    site.write_config(app={"build_command": "echo broken on purpose; exit 3"})
    result = site.deploy()
    assert result.code == ExitCode.BUILD_FAILED, result.output
    assert re.search(r"^ok +install dependencies", result.stdout, re.M), result.output
    assert re.search(r"^FAILED build the app \(next build\) \(", result.stdout, re.M), result.output
    assert not re.search(r"^ok +build the app", result.stdout, re.M), result.output
    assert "broken on purpose" in result.output


def test_build_killed_mid_copy_leaves_an_unfinished_release_that_the_next_run_cleans(site: Site) -> None:
    env = {**tool_env(), "NEXTDEPLOY_TEST_PAUSE_AT": "mid-copy"}
    deploy = subprocess.Popen([sys.executable, "-m", "nextdeploy", "deploy", "-c", str(site.config_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert deploy.stderr is not None
    for line in deploy.stderr:
        if "paused at mid-copy" in line:
            break
    deploy.send_signal(signal.SIGKILL)
    deploy.wait()
    [half_made] = list((site.root / "releases").iterdir())
    assert (half_made / ".nextdeploy-unfinished").exists()
    assert not (half_made / ".nextdeploy" / "manifest.json").exists()

    result = site.deploy()
    assert result.code == 0, result.output
    assert "took over the lock" in result.output
    assert not half_made.exists()
    assert [r["id"] for r in site.releases()] == [site.current()]
    assert site.version() == "v1"
