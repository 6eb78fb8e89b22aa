"""A public port someone else holds is found before anything is built or switched, with who holds it."""

from __future__ import annotations

import time

import pytest

from nextdeploy.errors import ExitCode
from nextdeploy.probe import free_port
from support.processes import port_held_elsewhere
from support.site import Site

pytestmark = pytest.mark.integration


def _refused_fast(site: Site, holder_pid: int, *args: str) -> None:
    started = time.monotonic()
    result = site.nextdeploy(*args)
    took = time.monotonic() - started
    assert result.code == ExitCode.PORT, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: port {site.port} is already in use by pid {holder_pid} ("), last
    assert "(fix: stop that process, or set [server] port to a free port)" in last, last
    assert took < 10, f"{args} took {took:.1f} s to refuse: the check must come before the build"


def test_a_port_held_by_another_process_is_refused_before_the_build(site: Site) -> None:
    with port_held_elsewhere(site.port) as holder:
        _refused_fast(site, holder.pid, "deploy")
    assert not (site.root / "releases").exists() or not any((site.root / "releases").iterdir())
    assert not any(e["event"] == "building" for e in site.log_events())

    # Freed: the first deploy goes through; the next one finds the port held by the live app's own PM2
    # daemon (the cluster primary), which is fine.
    assert site.deploy().code == 0
    first = site.current()
    assert site.deploy("v2").code == 0 and site.version() == "v2"

    # A config moving the app to a port held by someone else: refused, the live release untouched.
    live_port = site.port
    site.port = free_port()
    site.write_config()
    with port_held_elsewhere(site.port) as holder:
        _refused_fast(site, holder.pid, "deploy")
    site.port = live_port
    site.write_config()
    assert site.version() == "v2"

    # Stopped, then taken: the rollback (which would start the app) is refused too, and changes nothing.
    assert site.nextdeploy("stop").code == 0
    live = site.current()
    with port_held_elsewhere(site.port) as holder:
        _refused_fast(site, holder.pid, "rollback")
    assert site.current() == live != first
    assert site.nextdeploy("rollback").code == 0 and site.current() == first and site.version() == "v1"
