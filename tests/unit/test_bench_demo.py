"""`nextdeploy demo`'s checks that run before anything is deployed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.cli import demo_cmd
from nextdeploy.cli.main import main
from nextdeploy.errors import ExitCode


def test_without_aiohttp_the_demo_fails_with_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "aiohttp" else real_find_spec(name, *args)

    monkeypatch.setattr(demo_cmd.importlib.util, "find_spec", find_spec)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--dir", str(tmp_path / "demo")])
    assert exit_info.value.code == ExitCode.TOOL_MISSING
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: the demo needs aiohttp to send load, and it is not installed "
                     "(fix: pip install 'nextdeploy[load]')"]
    assert not (tmp_path / "demo").exists()


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
    from nextdeploy.config import load_config

    assert load_config(Target(tmp_path / "a").config_path).server.reload_at_once == 2  # nextdeploy's default
    assert load_config(Target(tmp_path / "b", reload_at_once=1).config_path).server.reload_at_once == 1
