"""What another program holds (the public port, the PM2 app name) is found before anything is built or
switched, named, and left alone."""

from __future__ import annotations

import json
import time

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.host.probe import listen_port
from support.processes import port_held_elsewhere
from support.site import Site

pytestmark = pytest.mark.integration


def _port_refused(site: Site, holder_pid: int, *args: str) -> None:
    last = _refused(site, ExitCode.PORT, *args)
    assert last.startswith(f"error: port {site.port} is already in use by pid {holder_pid} ("), last
    assert "(fix: stop that process, or set [server] port to a free port)" in last, last


def _refused(site: Site, code: ExitCode, *args: str) -> str:
    """Run the command, expect ``code`` within seconds (before any build), return the error line."""
    started = time.monotonic()
    result = site.nextdeploy(*args)
    took = time.monotonic() - started
    assert result.code == code, result.output
    assert took < 10, f"{args} took {took:.1f} s to refuse: the check must come before the build"
    return result.stderr.strip().splitlines()[-1]


def _pm2_pid(site: Site) -> int:
    listing = json.loads(site.pm2("jlist").stdout)
    return int(next(entry["pid"] for entry in listing if entry["name"] == "hello"))


def test_a_port_held_by_another_process_is_refused_before_the_build(site: Site) -> None:
    with port_held_elsewhere(site.port) as holder:
        _port_refused(site, holder.pid, "deploy")
    assert not (site.root / "releases").exists() or not any((site.root / "releases").iterdir())
    assert not any(e["event"] == "building" for e in site.log_events())

    # Freed: the first deploy goes through; the next one finds the port held by the live app's own PM2
    # daemon (the cluster primary), which is fine.
    site.deploy().expect_ok()
    first = site.current()
    assert site.deploy("v2").code == 0 and site.version() == "v2"

    # A config moving the app to a port held by someone else: refused, the live release untouched.
    live_port = site.port
    site.port = listen_port()
    site.write_config()
    with port_held_elsewhere(site.port) as holder:
        _port_refused(site, holder.pid, "deploy")
    site.port = live_port
    site.write_config()
    assert site.version() == "v2"

    # Stopped, then taken: the rollback (which would start the app) is refused too, and changes nothing.
    assert site.nextdeploy("stop").code == 0
    live = site.current()
    with port_held_elsewhere(site.port) as holder:
        _port_refused(site, holder.pid, "rollback")
    assert site.current() == live != first
    assert site.nextdeploy("rollback").code == 0 and site.current() == first and site.version() == "v1"


def test_another_pm2_app_with_the_same_name_is_left_alone(site: Site) -> None:
    other = site.base / "other" / "worker.js"
    other.parent.mkdir()
    other.write_text("setInterval(() => {}, 1000);\n")
    assert site.pm2("start", str(other), "--name", site.app_name).returncode == 0
    pid = _pm2_pid(site)
    for command in ("deploy", "stop"):
        last = _refused(site, ExitCode.NAME_TAKEN, command)
        assert last == (f"error: PM2 (PM2_HOME={site.pm2_home}) already runs an app named 'hello' that is not "
                        f"from {site.root}: {other} (pid {pid}) (fix: `pm2 delete hello` if it is an old copy "
                        "of this app, or set [app] name to another name)"), last
    assert _pm2_pid(site) == pid  # still running, untouched
    assert not any(e["event"] == "building" for e in site.log_events())
    # Renamed, the app deploys beside it.
    site.app_name = "hello-web"
    site.write_config()
    assert site.deploy().code == 0 and site.version() == "v1" and _pm2_pid(site) == pid
