"""The local executor: atomic symlink switch, copy with symlinks kept, dry run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nextdeploy.core.errors import HostPathError, ToolMissingError
from nextdeploy.host.executor import DryRunExecutor, LocalExecutor
from nextdeploy.host.files import switch_symlink
from nextdeploy.plans.ops import (
    CopyFile,
    CopyTree,
    MakeDirs,
    MoveTree,
    PrivateFile,
    Run,
    Symlink,
    WriteFile,
)
from support.processes import as_in_a_terminal, gone_soon


def test_switch_replaces_a_link_atomically(tmp_path: Path) -> None:
    link = tmp_path / "current"
    switch_symlink(link, "releases/a")
    switch_symlink(link, "releases/b")
    assert os.readlink(link) == "releases/b"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]  # no temp link left behind


def test_switch_refuses_a_real_directory(tmp_path: Path) -> None:
    (tmp_path / "current").mkdir()
    with pytest.raises(HostPathError, match="real directory") as caught:
        switch_symlink(tmp_path / "current", "releases/a")
    assert caught.value.hint and "mv " in caught.value.hint
    assert (tmp_path / "current").is_dir()


def test_copy_keeps_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "node_modules" / ".pnpm" / "next").mkdir(parents=True)
    (source / "node_modules" / ".pnpm" / "next" / "index.js").write_text("x")
    (source / "node_modules" / "next").symlink_to(".pnpm/next")
    LocalExecutor().apply(CopyTree(source, tmp_path / "dst"))
    copied = tmp_path / "dst" / "node_modules" / "next"
    assert copied.is_symlink() and os.readlink(copied) == ".pnpm/next"


def test_move_hard_links_identical_dependency_files_only(tmp_path: Path) -> None:
    def tree(root: Path, dep: str, changed: str, app: str) -> Path:
        (root / "node_modules" / "dep").mkdir(parents=True)
        (root / "node_modules" / "dep" / "index.js").write_text(dep)
        (root / "node_modules" / "dep" / "changed.js").write_text(changed)
        (root / "node_modules" / "next").symlink_to("dep")
        (root / "server.js").write_text(app)
        return root

    earlier = tree(tmp_path / "earlier", "same", "old", "same app")
    source = tree(tmp_path / "src", "same", "new", "same app")
    moved_inode = (source / "node_modules/dep/changed.js").stat().st_ino
    dst = tmp_path / "dst"
    LocalExecutor().apply(MoveTree(source, dst, link_from=earlier))
    assert not (source / "server.js").exists()  # renamed, not copied; linked files stay behind
    assert (dst / "node_modules/dep/changed.js").stat().st_ino == moved_inode
    assert os.readlink(dst / "node_modules/next") == "dep"

    def shared(relative: str) -> bool:
        return (dst / relative).stat().st_ino == (earlier / relative).stat().st_ino

    assert shared("node_modules/dep/index.js")
    assert not shared("node_modules/dep/changed.js") and (dst / "node_modules/dep/changed.js").read_text() == "new"
    assert not shared("server.js")  # outside node_modules: the app's own files are never shared
    assert not list(dst.rglob("*.nextdeploy-link"))
    # A later copy onto a linked file replaces it; the earlier release's file stays as it was.
    (tmp_path / "patch.js").write_text("patched")
    LocalExecutor().apply(CopyFile(tmp_path / "patch.js", dst / "node_modules/dep/index.js"))
    assert (earlier / "node_modules/dep/index.js").read_text() == "same"
    assert (dst / "node_modules/dep/index.js").read_text() == "patched"


def test_move_copies_what_it_cannot_rename(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "app" / ".next").mkdir(parents=True)
    (source / "app" / ".next" / "BUILD_ID").write_text("b1")
    (source / "server.js").write_text("new")
    dst = tmp_path / "dst"
    (dst / "app").mkdir(parents=True)
    (dst / "app" / "kept.txt").write_text("kept")  # a name already there: merged by a copy
    LocalExecutor().apply(MoveTree(source, dst))
    assert (dst / "app" / ".next" / "BUILD_ID").read_text() == "b1" and (dst / "app" / "kept.txt").exists()
    assert (dst / "server.js").read_text() == "new" and not (source / "server.js").exists()


def test_move_link_from_shows_in_dry_run(tmp_path: Path) -> None:
    line = MoveTree(tmp_path / "a", tmp_path / "b", link_from=tmp_path / "live").render()
    assert line.startswith("mv ") and "hard-linked" in line


def test_copy_tree_links_files_identical_in_the_earlier_copy(tmp_path: Path) -> None:
    # Issue 20: `public` was copied into every release, 17 MB each for a real app, though unchanged.
    live, source, dst = tmp_path / "live" / "public", tmp_path / "src" / "public", tmp_path / "new" / "public"
    for tree, changed in ((live, "old"), (source, "new")):
        (tree / "img").mkdir(parents=True)
        (tree / "img" / "logo.svg").write_text("<svg/>")
        (tree / "notes.txt").write_text(changed)
        (tree / "link.svg").symlink_to("img/logo.svg")
    (source / "added.txt").write_text("added")
    LocalExecutor().apply(CopyTree(source, dst, link_from=live))
    assert os.path.samefile(dst / "img" / "logo.svg", live / "img" / "logo.svg")
    assert not os.path.samefile(dst / "notes.txt", live / "notes.txt") and (dst / "notes.txt").read_text() == "new"
    assert (dst / "added.txt").read_text() == "added" and os.readlink(dst / "link.svg") == "img/logo.svg"
    assert (live / "notes.txt").read_text() == "old"
    # Without an earlier copy (a first deploy), or when it has no such file, every file is its own.
    LocalExecutor().apply(CopyTree(source, tmp_path / "first"))
    assert not os.path.samefile(tmp_path / "first" / "img" / "logo.svg", live / "img" / "logo.svg")


def test_copy_tree_renders_what_really_happens() -> None:
    # cp has no --exclude: a copy that skips names renders as the rsync line that does the same.
    assert CopyTree(Path("/repo"), Path("/b/src"), ignore=("node_modules", ".next")).render() == (
        "rsync -a --exclude=node_modules --exclude=.next /repo/ /b/src/")
    assert CopyTree(Path("/b/public"), Path("/r/public"), link_from=Path("/live/public")).render() == (
        "cp -a /b/public/. /r/public/  # files identical in /live/public are hard-linked")


def test_write_file_mode(tmp_path: Path) -> None:
    LocalExecutor().apply(WriteFile(tmp_path / "k", "secret", mode=0o600))
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_logs_are_private(tmp_path: Path) -> None:
    """What a build or a server prints may hold secrets: logs are 0600 in a 0700 directory (they were 0644
    in a 0755 logs/), whatever the umask, and an older world-readable log is made private too."""
    old_umask = os.umask(0o022)
    try:
        logs = tmp_path / "logs"
        log = logs / "build-1.log"
        result = LocalExecutor().apply(Run(("sh", "-c", "echo built"), env={"TOKEN": "s3cret"}, log_file=log,
                                           secret_env=frozenset({"TOKEN"})))
        assert result.ok
        assert (logs.stat().st_mode & 0o777, log.stat().st_mode & 0o777) == (0o700, 0o600)
        assert log.read_text().splitlines() == [f"$ TOKEN=*** sh -c 'echo built' >> {log} 2>&1", "built"]
        logs.chmod(0o755)
        pm2_log = logs / "pm2-app.out.log"
        pm2_log.write_text("kept\n")
        pm2_log.chmod(0o644)
        LocalExecutor().apply_all([MakeDirs(logs, mode=0o700), PrivateFile(pm2_log), PrivateFile(logs / "new.log")])
        assert logs.stat().st_mode & 0o777 == 0o700
        assert pm2_log.read_text() == "kept\n" and pm2_log.stat().st_mode & 0o777 == 0o600  # never truncated
        assert (logs / "new.log").stat().st_mode & 0o777 == 0o600
        assert PrivateFile(logs / "a b").render() == f"touch '{logs}/a b' && chmod 600 '{logs}/a b'"
        assert MakeDirs(logs, mode=0o700).render() == f"mkdir -p {logs} && chmod 700 {logs}"
    finally:
        os.umask(old_umask)


def test_run_missing_tool_is_a_clear_error() -> None:
    with pytest.raises(ToolMissingError, match="no-such-tool-xyz"):
        LocalExecutor().apply(Run(("no-such-tool-xyz",)))


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    executor = DryRunExecutor(lines.append)
    executor.apply_all([Symlink("releases/a", tmp_path / "current"), WriteFile(tmp_path / "f", "x"),
                        Run(("pm2", "reload", "x"))])
    assert not any(tmp_path.iterdir())
    assert lines[-1] == "pm2 reload x" and lines[0].startswith("ln -sfn releases/a")


def test_run_with_nice_lowers_the_child_priority_only(tmp_path: Path) -> None:
    op = Run((sys.executable, "-c", "import os; print(os.nice(0))"), nice=7)
    assert op.render().startswith("nice -n 7 ")
    base = os.nice(0)
    result = LocalExecutor().apply(op)
    assert result.ok and int(result.stdout) == min(19, base + 7)
    assert os.nice(0) == base  # the deployer itself keeps its priority


AUTOGROUP = Path("/proc/self/autogroup")


@pytest.mark.skipif(not AUTOGROUP.exists(), reason="the kernel has no autogroup scheduling")
def test_run_with_nice_gets_a_session_whose_autogroup_has_the_niceness() -> None:
    # With autogroup, CPU is shared between sessions before niceness counts: a niced build in the
    # deployer's session would compete as an equal with the PM2 daemon's session.
    script = "import os; print(os.getsid(0)); print(open('/proc/self/autogroup').read())"
    result = LocalExecutor().apply(Run((sys.executable, "-c", script), nice=9))
    sid, autogroup = result.stdout.splitlines()[:2]
    assert int(sid) != os.getsid(0)
    assert autogroup.endswith(" nice 9")
    # The kernel prints nothing for the root autogroup, where a process lives whose ancestors never
    # called setsid (as under CI's runner): then any autogroup line means a group of its own.
    ours = AUTOGROUP.read_text().split()
    assert not ours or autogroup.split()[0] != ours[0]
    plain = LocalExecutor().apply(Run((sys.executable, "-c", script)))
    assert int(plain.stdout.splitlines()[0]) == os.getsid(0)  # without nice: nothing changes


@pytest.mark.parametrize("nice", [0, 5])
@pytest.mark.parametrize("log", [False, True])
def test_a_timed_out_run_is_killed_with_everything_it_started(tmp_path: Path, log: bool, nice: int) -> None:
    pid_file = tmp_path / "pid"
    # The grandchild must not outlive the timeout, niced or not ([app] build_nice = 0).
    op = Run(_with_grandchild(pid_file), nice=nice, timeout=1,
             log_file=tmp_path / "log" if log else None)
    started = time.monotonic()
    result = LocalExecutor().apply(op)
    assert result.returncode == 124 and "timed out after 1 s" in result.stderr and result.timed_out
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    assert gone_soon(grandchild)


# The signal lands once the command runs but before the deployer waits for it (a wrapped Popen).
_SIGNAL_AS_IT_STARTS = """
import os, signal, subprocess, time
from pathlib import Path
started = subprocess.Popen.__init__
def start_then_signal(self, *args, **kwargs):
    started(self, *args, **kwargs)
    while not Path({pid_file!r}).read_text().strip():
        time.sleep(0.01)
    os.kill(os.getpid(), {signum})
    time.sleep(0.2)
subprocess.Popen.__init__ = start_then_signal
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("when", ["while it runs", "as it starts"])
def test_a_stop_signal_during_a_niced_run_kills_it_with_everything_it_started(tmp_path: Path, when: str,
                                                                               signum: int) -> None:
    # In its own session the build gets neither the terminal's Ctrl-C nor its hang-up, nor a SIGTERM sent to
    # the deployer: the deployer must stop it.
    pid_file = tmp_path / "pid"
    pid_file.touch()
    script = (
        (_SIGNAL_AS_IT_STARTS.format(pid_file=str(pid_file), signum=int(signum)) if when == "as it starts" else "")
        + "from nextdeploy.core import interrupts\n"
        + "from nextdeploy.host.executor import LocalExecutor\n"
        + "from nextdeploy.plans.ops import Run\n"
        + "interrupts.install()\n"
        + f"LocalExecutor().apply(Run({_with_grandchild(pid_file)!r}, nice=5))\n"
    )
    deployer = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=as_in_a_terminal)
    try:
        deadline = time.monotonic() + 10
        while not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        if when == "while it runs":
            deployer.send_signal(signum)
        _, err = deployer.communicate(timeout=10)
        raised = "KeyboardInterrupt" if signum == signal.SIGINT else f"Interrupted: {signal.Signals(signum).name}"
        assert deployer.returncode != 0 and raised in err
        assert gone_soon(grandchild)
    finally:
        if deployer.poll() is None:
            os.killpg(deployer.pid, signal.SIGKILL)


def test_a_niced_run_does_not_inherit_held_stop_signals() -> None:
    script = "print([line for line in open('/proc/self/status') if line.startswith('SigBlk:')][0])"
    result = LocalExecutor().apply(Run((sys.executable, "-c", script), nice=3))
    blocked = int(result.stdout.split()[1], 16)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        assert blocked & (1 << (signum - 1)) == 0
        assert signum not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # nor does the deployer


def _with_grandchild(pid_file: Path) -> tuple[str, ...]:
    """A command that starts a process of its own (as `pnpm run build` starts `next build`) and waits."""
    return ("sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait")
