"""`nextdeploy demo`'s checks that run before anything is deployed."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextdeploy.cli import demo_cmd


def test_prepare_dir_marks_a_new_dir_and_reuses_only_its_own(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    demo_cmd.prepare_dir(demo_dir)
    assert (demo_dir / demo_cmd.DEMO_MARKER).is_file()
    (demo_dir / "root").mkdir()
    demo_cmd.prepare_dir(demo_dir)  # a previous demo's dir: wiped and reused
    assert not (demo_dir / "root").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(demo_cmd.HostPathError, match="was not made by `nextdeploy demo`"):
        demo_cmd.prepare_dir(foreign)


def test_the_bench_target_config_passes_reload_at_once_on(tmp_path: Path) -> None:
    from nextdeploy.benchkit.target import Target
    from nextdeploy.core.config import load_config

    assert load_config(Target(tmp_path / "a").config_path).server.reload_at_once == 2  # nextdeploy's default
    assert load_config(Target(tmp_path / "b", reload_at_once=1).config_path).server.reload_at_once == 1


def test_the_demo_shows_how_steps_ended_by_their_titles() -> None:
    assert demo_cmd.step_outcome("ok  [build] build the app (next build) (3.0 s)") == \
        "ok  build the app (next build) (3.0 s)"
    assert demo_cmd.step_outcome("FAILED [held] preflight: new workers (4 s window) (1.0 s)") == \
        "FAILED preflight: new workers (4 s window) (1.0 s)"
    error = "error: the release crashed (fix: see `nextdeploy logs`)"
    assert demo_cmd.step_outcome(error) == error
    assert demo_cmd.step_outcome("... [build] build the app (next build)") is None
    assert demo_cmd.step_outcome("release 20261121-070058-556-fc4f") is None


def test_prepare_dir_stops_and_wipes_a_previous_demo_through_the_executor(tmp_path: Path) -> None:
    from nextdeploy.host.executor import LocalExecutor, RunResult
    from nextdeploy.plans.ops import MakeDirs, Op, Remove, Run, WriteFile

    class Recording(LocalExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[Op] = []

        def apply(self, op: Op) -> RunResult:
            self.ops.append(op)
            return RunResult(0) if isinstance(op, Run) else super().apply(op)  # no pm2 kill for real

    demo_dir = tmp_path / "demo"
    demo_cmd.prepare_dir(demo_dir)
    (demo_dir / "pm2").mkdir()
    (demo_dir / "root" / "releases").mkdir(parents=True)
    executor = Recording()
    demo_cmd.prepare_dir(demo_dir, executor)
    run, *rest = executor.ops
    assert isinstance(run, Run) and run.argv[1:] == ("kill",) and run.env["PM2_HOME"] == str(demo_dir / "pm2")
    assert rest == [Remove(demo_dir / "app"), Remove(demo_dir / "root"), Remove(demo_dir / "pm2"),
                    MakeDirs(demo_dir), WriteFile(demo_dir / demo_cmd.DEMO_MARKER, demo_cmd.DEMO_MARKER_TEXT)]
    assert sorted(path.name for path in demo_dir.iterdir()) == [demo_cmd.DEMO_MARKER]
