"""Whose is the deploy root: marked, new, adopted from an earlier nextdeploy, or refused."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode, HostPathError
from nextdeploy.host.rootmark import ROOT_MARKER, Claim, check_root, claim, mark


def test_claim() -> None:
    assert claim([], marked=False, has_release_log=False, deletable=0) is Claim.OURS  # empty or new
    assert claim(["photos", ROOT_MARKER], marked=True, has_release_log=False, deletable=3) is Claim.OURS
    # An earlier nextdeploy's root: its release log, or only its own folders with nothing to delete in them.
    assert claim(["releases", "releases.jsonl", "current"], marked=False, has_release_log=True,
                 deletable=2) is Claim.ADOPT
    assert claim(["releases", "builds", "logs", ".lock", "tools"], marked=False, has_release_log=False,
                 deletable=0) is Claim.ADOPT
    # Anything else holding files is not ours.
    assert claim(["index.html"], marked=False, has_release_log=False, deletable=0) is Claim.FOREIGN
    assert claim(["builds", "trash"], marked=False, has_release_log=False, deletable=1) is Claim.FOREIGN


def test_a_foreign_root_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    (root / "builds").mkdir(parents=True)
    (root / "builds" / "important").write_text("keep me")
    (root / "notes.txt").write_text("mine")
    with pytest.raises(HostPathError) as caught:
        check_root(root)
    assert caught.value.exit_code is ExitCode.HOST_PATH
    assert caught.value.message.startswith(f"[server] root {root} is a non-empty directory nextdeploy did not "
                                           "create (it holds builds, notes.txt)")
    assert caught.value.hint is not None and "new or empty directory" in caught.value.hint
    # A release log that is not one (someone's own releases.jsonl) proves nothing.
    (root / "releases.jsonl").write_text("not json\n")
    with pytest.raises(HostPathError):
        check_root(root)
    assert not (root / ROOT_MARKER).exists()


def test_new_marked_and_earlier_roots(tmp_path: Path) -> None:
    assert check_root(tmp_path / "new") is Claim.OURS
    (tmp_path / "volume" / "lost+found").mkdir(parents=True)  # a file system of its own, fresh from mkfs
    assert check_root(tmp_path / "volume") is Claim.OURS
    old = tmp_path / "old"
    (old / "releases" / "r1").mkdir(parents=True)
    (old / "releases.jsonl").write_text(json.dumps({"event": "building", "release": "r1", "ts": "t"}) + "\n")
    assert check_root(old) is Claim.ADOPT
    mark(old)
    (old / "builds").mkdir()
    (old / "builds" / "x").write_text("")
    assert check_root(old) is Claim.OURS
    with pytest.raises(HostPathError, match="is a file, not a directory"):
        check_root(old / "releases.jsonl")


def test_the_mark_on_a_full_disk_is_an_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    mark(tmp_path)
    assert (tmp_path / ROOT_MARKER).is_file()  # so the deploy goes on, to its clear disk-full error (exit 17)
