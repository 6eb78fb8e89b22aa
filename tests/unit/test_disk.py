"""A full disk is told apart from a broken app or a bug (real ENOSPC from /dev/full, real files)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.host.disk import disk_full_error, is_disk_full, says_disk_full

PNPM_WRAPPED = """Error:   × installing dependencies
  ╰─▶ Failed to write cafs: Failed to write to file at "/srv/.pnpm-
      store/v11/files/19/6f54": No
      space left on device (os error 28)""".splitlines()
NEXT_BUILD = ["Error: ENOSPC: no space left on device, copyfile '/b/x' -> '/b/y'", "  errno: -28,"]
BROKEN_PAGE = ["./app/page.jsx", "Error: Unexpected token. Did you mean `{'>'}` or `&gt;`?", "> Build failed"]


def test_tools_saying_the_disk_is_full_are_recognised_even_when_wrapped() -> None:
    assert says_disk_full(PNPM_WRAPPED) and says_disk_full(NEXT_BUILD)
    assert says_disk_full(["npm ERR! code EDQUOT"])
    assert not says_disk_full(BROKEN_PAGE) and not says_disk_full([])


def test_a_real_write_to_a_full_disk_is_recognised() -> None:
    with pytest.raises(OSError) as caught, open("/dev/full", "w") as full:
        full.write("x")
        full.flush()
    assert is_disk_full(caught.value)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(ValueError())


def test_the_error_says_what_takes_the_space_counting_hard_links_once(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "big").write_bytes(os.urandom(2_000_000))
    (tmp_path / "releases" / "r2").mkdir()
    os.link(release / "big", tmp_path / "releases" / "r2" / "big")  # a node_modules file shared by two releases
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "deps").write_bytes(os.urandom(1_000_000))
    error = disk_full_error(tmp_path, "building release r3", ["  | ENOSPC"])
    assert error.exit_code == ExitCode.DISK_FULL and error.details == ["  | ENOSPC"]
    assert error.message.startswith(f"the disk of {tmp_path} is full (") and "free) while building release r3" \
        in error.message
    assert error.hint is not None
    assert "releases 2.0 MB" in error.hint and "cache 1.0 MB" in error.hint and "logs 0.0 MB" in error.hint
    assert "[releases] keep" in error.hint and "nothing live was changed" in error.hint
