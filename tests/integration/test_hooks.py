"""Release hooks in real deploys: the facts a hook gets, a failing before_activate under load, a hook killed
at its timeout, a failing after_activate, on_failure."""

from __future__ import annotations

import pytest

from nextdeploy.core.errors import ExitCode
from support.processes import gone_soon
from support.site import Site

pytest.importorskip("aiohttp")
from support.load import load_on, no_failures

pytestmark = pytest.mark.integration


def test_release_hooks_in_real_deploys(site: Site) -> None:
    facts, failures, pid_file = site.base / "facts.env", site.base / "failures.txt", site.base / "hook.pid"
    on_failure = f'echo "$NEXTDEPLOY_EVENT $NEXTDEPLOY_RELEASE: $NEXTDEPLOY_ERROR" >> {failures}'
    site.write_config(server={"env": {"DATABASE_URL": "postgres://app:s3cret@db/app"}}, hooks={
        "before_activate": f"echo migrating in $(pwd); env > {facts}; test -f server.js",
        "after_activate": "echo notifying; exit 7",
        "on_failure": on_failure,
    })
    first = site.deploy().expect_ok()
    v1 = site.current()
    assert v1 is not None
    env = dict(line.split("=", 1) for line in facts.read_text().splitlines() if "=" in line)
    assert env["NEXTDEPLOY_EVENT"] == "before_activate" and env["NEXTDEPLOY_APP"] == "hello"
    assert env["NEXTDEPLOY_RELEASE"] == v1 and env["NEXTDEPLOY_PREVIOUS_RELEASE"] == ""
    assert env["NEXTDEPLOY_RELEASE_DIR"] == str(site.root / "releases" / v1)
    assert env["DATABASE_URL"] == "postgres://app:s3cret@db/app" and env["NODE_ENV"] == "production"
    assert "NEXTDEPLOY_REVISION" in env and not any("SERVER_ACTIONS" in name for name in env)
    # Streamed with a prefix, kept in the deploy's log; the failing after_activate is only a warning.
    assert f"[before_activate] migrating in {site.root / 'releases' / v1}" in first.output
    assert "[after_activate] notifying" in first.output
    assert "warning: the after_activate hook failed (exit 7)" in first.output
    build_log = (site.root / "logs" / f"build-{v1}.log").read_text()
    assert "migrating in" in build_log and "notifying" in build_log and "s3cret" not in build_log
    assert not failures.exists()

    # A failing before_activate under load: rejected like a failed preflight, nothing live changed.
    site.write_config(server={"env": {"DATABASE_URL": "postgres://app:s3cret@db/app"}}, hooks={
        "before_activate": "echo migration failed >&2; exit 4", "on_failure": on_failure})
    site.set_version("v2")
    with load_on(site) as box:
        rejected = site.deploy()
    assert rejected.code == ExitCode.HOOK_FAILED, rejected.output
    last = rejected.output.strip().splitlines()[-1]
    assert last.startswith("error: the before_activate hook failed (exit 4)") and "nothing live changed" in last
    assert "[before_activate] migration failed" in rejected.output
    no_failures(box["load"])
    assert box["load"].releases_seen().keys() == {v1}
    assert site.current() == v1 and site.version() == "v1"
    v2 = site.log_events()[-1]["release"]
    assert {r["id"]: r["status"] for r in site.releases()}[v2] == "failed"
    assert failures.read_text() == f"on_failure {v2}: the before_activate hook failed (exit 4): release {v2} " \
                                   "rejected; nothing live changed\n"

    # A hook that hangs is killed at [hooks] timeout, with what it started.
    site.write_config(hooks={"before_activate": f"sleep 300 & echo $! > {pid_file}; wait", "timeout": 2})
    hung = site.deploy()
    assert hung.code == ExitCode.HOOK_FAILED, hung.output
    assert "was still running after 2 s and was killed" in hung.output
    assert gone_soon(int(pid_file.read_text()))
    assert site.current() == v1 and site.version() == "v1"
    assert "s3cret" not in first.output + rejected.output + hung.output
