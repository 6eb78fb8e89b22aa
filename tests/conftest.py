"""Shared fixtures. Integration tests need node, pnpm and pm2 (installed by scripts/test into .tools/)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fleetops import TwoReleases, build_two_releases
from support.hosts import skip_without_host_tools
from support.site import TOOLS_BIN, Site


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal has it, however the suite was started: a run started in the background by a
    non-interactive shell (`scripts/test &`, some CI runners) inherits SIGINT ignored, and so would every
    nextdeploy a test starts and interrupts (a handler set here is reset to the default in each child)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def have_node_tools() -> bool:
    return shutil.which("node") is not None and (TOOLS_BIN / "pm2").exists() and (TOOLS_BIN / "pnpm").exists()


@pytest.fixture(autouse=True, scope="session")
def _quiet_pm2() -> None:
    # PM2 would otherwise check its version over the network once a day from every daemon.
    os.environ["PM2_DISABLE_VERSION_CHECK"] = "1"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh deploy target with the example app at v1; everything it started is killed afterwards."""
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    target = Site(tmp_path)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture(scope="session")
def two_releases(tmp_path_factory: pytest.TempPathFactory) -> TwoReleases:
    """The example app's v1 and v2 built once for the session by local deploys (the fleet operations modules
    ship them to their own fleets: tests/support/fleetops.py)."""
    if not have_node_tools():
        pytest.skip("needs node, and pnpm + pm2 under .tools/ (run scripts/test)")
    skip_without_host_tools()  # before the builds: they serve the fleet modules alone
    return build_two_releases(tmp_path_factory.mktemp("two-releases"))
