"""A full disk during a deploy: one clear line and its own exit code, the live release keeps serving, the
failed build's files are gone and its node_modules kept (real builds, PM2, HTTP; the deploy root on a
tmpfs of its own, which needs root, as this project's machines and CI have)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from support.site import Site

pytestmark = pytest.mark.integration

# The first deploy needs ~450 MB here: pnpm keeps a store of its own on a disk other than its usual one.
DISK_SIZE = "900M"
LEFT_FREE = 8 * 1024 * 1024  # room for the install's renames and a few logs, not for `next build`'s output


@pytest.fixture
def small_disk_site(site: Site) -> Iterator[Site]:
    site.root.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(site.root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield site
    finally:
        site.close()  # before the unmount: PM2's workers run from it
        subprocess.run(["umount", "-l", str(site.root)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as out:
        out.truncate(0)
        chunk = b"\0" * (1 << 20)
        for _ in range(max(0, free - leave) // len(chunk)):
            out.write(chunk)  # tmpfs allocates on write, not on truncate
    return filler


def test_a_full_disk_fails_the_build_clearly_and_changes_nothing_live(small_disk_site: Site) -> None:
    site = small_disk_site
    site.write_config(health={"stable_for": 1})
    site.deploy().expect_ok()
    live = site.current()

    filler = _fill(site.root, LEFT_FREE)
    site.set_version("v2")
    result = site.deploy()
    assert result.code == ExitCode.DISK_FULL, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the disk of {site.root} is full (") and "while building release" in last, last
    assert "nothing live was changed" in last and "ENOSPC" in result.stderr  # the build's own words above it
    assert site.current() == live and site.version() == "v1"
    failed = site.log_events()[-1]
    assert failed["event"] == "failed" and "disk space" in failed["reason"]
    assert not (site.root / "releases" / failed["release"]).exists()
    assert not any((site.root / "builds").iterdir())
    # The install was fine: its node_modules wait for the next build.
    assert (site.root / "cache" / "deps" / "key").is_file()

    filler.unlink()
    result = site.deploy()
    assert result.code == 0, result.output
    assert "reusing the last build's node_modules" in result.output
    assert site.version() == "v2"
