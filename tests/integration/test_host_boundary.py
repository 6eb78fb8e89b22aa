"""The host boundary a fleet controller drives over SSH (`nextdeploy host ...`), on real PM2 and real builds:
a release built beside the live one without going live, then activated, status, rollback, stop, start, each
answering with one JSON object on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from typing import Any

import pytest

from nextdeploy.core.errors import ExitCode
from support.site import Run, Site, tool_env

pytestmark = pytest.mark.integration

# build_release is a function of the procedures (the fleet's builder calls it), not a command: run it as the
# CLI would, in its own process with the site's tools.
BUILD = """
import sys
from nextdeploy.cli.options import make_context
from pathlib import Path
from nextdeploy.procedures.deploy import build_release
print(build_release(make_context(Path(sys.argv[1]), json_mode=True)))
"""


def _host(site: Site, *args: str) -> tuple[Run, dict[str, Any]]:
    run = site.nextdeploy("host", *args)
    lines = run.stdout.splitlines()
    assert len(lines) == 1, f"not one JSON object on stdout:\n{run.output}"
    document: dict[str, Any] = json.loads(lines[0])
    assert document["ok"] is (run.code == 0), run.output
    return run, document


def _serving(site: Site) -> bool:
    try:
        site.get()
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


def test_a_release_built_on_the_host_goes_live_by_host_activate_and_back_by_host_rollback(site: Site) -> None:
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    first = site.current()
    site.set_version("v2")
    built = subprocess.run([sys.executable, "-c", BUILD, str(site.config_path)], capture_output=True, text=True,
                           env=tool_env(), timeout=600, stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stdout + built.stderr
    second = built.stdout.strip()
    assert second != first and site.current() == first and site.version() == "v1"  # built, not live
    assert {r["id"]: r["status"] for r in site.releases()}[second] == "ready"

    run, document = _host(site, "activate", second)
    assert run.code == 0, run.output
    result = document["result"]
    assert result["release"] == second and result["previous"] == first and result["already_live"] is False
    assert [step["name"] for step in document["steps"]].count("cutover") == 1  # the held cut-over: code only
    assert "[cutover]" in run.stderr  # progress: step lines on stderr
    assert site.current() == second and site.version() == "v2"
    run, document = _host(site, "activate", second)  # again: nothing to do (a controller may retry)
    assert run.code == 0 and document["result"]["already_live"] is True, run.output

    run, document = _host(site, "status")
    assert run.code == 0 and document["result"]["current"] == second and document["result"]["healthy"] is True
    assert [w["release"] for w in document["result"]["workers"]] == [second, second]

    run, document = _host(site, "activate", "20200101-000000-none")
    assert run.code == ExitCode.NOT_FOUND, run.output
    assert document["error"]["code"] == ExitCode.NOT_FOUND and document["error"]["kind"] == "ReleaseNotFoundError"
    assert site.version() == "v2"  # nothing live changed

    run, document = _host(site, "rollback")
    assert run.code == 0, run.output
    assert document["result"]["release"] == first and document["result"]["previous"] == second
    assert site.current() == first and site.version() == "v1"

    run, document = _host(site, "stop")
    assert run.code == 0 and document["result"] == {**document["result"], "release": first, "stopped_workers": 2}
    assert not _serving(site)

    run, document = _host(site, "start")
    assert run.code == 0 and document["result"]["release"] == first, run.output
    assert document["result"]["already_serving"] is False and site.version() == "v1"
    run, document = _host(site, "rollback", "--to", first)
    assert run.code == ExitCode.ROLLBACK_FAILED and document["error"]["kind"] == "RollbackError", run.output
    assert "already live" in document["error"]["message"] and site.version() == "v1"
