"""The build's host work goes through the host layer: the git revision of a directory source is read and a
failed build removed by executor ops, the deploy root prepared by ``host.rootmark``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import HostPathError
from nextdeploy.core.ui import Reporter
from nextdeploy.host import rootmark
from nextdeploy.host.executor import LocalExecutor, RunResult
from nextdeploy.plans.ops import Op, Remove, Run
from nextdeploy.release.builder import _discard, working_tree_revision


class Recording(LocalExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def apply(self, op: Op) -> RunResult:
        self.ops.append(op)
        return super().apply(op)


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_the_revision_of_a_directory_source_is_read_through_the_executor(tmp_path: Path) -> None:
    source = tmp_path / "app"
    source.mkdir()
    config = parse_config({"app": {"name": "x", "source": str(source)}, "server": {"root": str(tmp_path / "r")}},
                          tmp_path)
    executor = Recording()
    ctx = Context(config, executor, Reporter(force_plain=True))
    assert working_tree_revision(ctx, source) is None and executor.ops == []  # not a git work tree
    _git(source, "init", "-q")
    (source / "page.js").write_text("v1")
    _git(source, "add", ".")
    _git(source, "commit", "-qm", "v1")
    head = _git(source, "rev-parse", "HEAD").strip()
    assert working_tree_revision(ctx, source) == head
    assert [op.argv[3:] for op in executor.ops if isinstance(op, Run)] == [("rev-parse", "HEAD"),
                                                                          ("status", "--porcelain")]
    (source / "page.js").write_text("v2")
    assert working_tree_revision(ctx, source) == head + "-dirty"


def test_prepare_root_creates_the_folders_logs_private_and_marks_the_root(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "x", "source": "app"}, "server": {"root": str(tmp_path / "root")}},
                          tmp_path)
    ctx = Context(config, LocalExecutor(), Reporter(force_plain=True))
    assert rootmark.prepare_root(ctx.paths) is rootmark.Claim.OURS
    assert (ctx.paths.root / rootmark.ROOT_MARKER).is_file() and ctx.paths.releases_dir.is_dir()
    assert ctx.paths.logs_dir.stat().st_mode & 0o777 == 0o700
    assert not list(ctx.paths.root.glob(".write-test-*"))
    (tmp_path / "file").write_text("")
    blocked = parse_config({"app": {"name": "x", "source": "app"},
                            "server": {"root": str(tmp_path / "file" / "root")}}, tmp_path)
    with pytest.raises(HostPathError, match="is a file"):
        rootmark.prepare_root(Context(blocked, LocalExecutor(), Reporter(force_plain=True)).paths)


def test_a_failed_build_is_discarded_through_the_executor(tmp_path: Path) -> None:
    config = parse_config({"app": {"name": "x", "source": "app"}, "server": {"root": str(tmp_path / "root")}},
                          tmp_path)
    executor = Recording()
    ctx = Context(config, executor, Reporter(force_plain=True))
    rootmark.prepare_root(ctx.paths)
    release, build = ctx.paths.release_dir("r1"), ctx.paths.build_dir("r1")
    for directory in (release, build / "src"):
        directory.mkdir(parents=True)
    _discard(ctx, "r1", build, "the build failed")
    assert executor.ops == [Remove(release), Remove(build)]
    assert not release.exists() and not build.exists()
    assert [(e["event"], e["release"], e["reason"]) for e in ctx.log.events()] == [("failed", "r1", "the build failed")]
