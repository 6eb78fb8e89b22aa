"""Reading the app's logs across their rotations (nextdeploy.host.applogs) and the [logs] settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nextdeploy.core.config import parse_config, size_bytes
from nextdeploy.core.errors import ConfigError
from nextdeploy.host.applogs import ROTATED_GRACE, Follower, rotated_files, tail


def rotate(path: Path, keep: int) -> None:
    """What the launcher does: .N-1 -> .N ... .1 -> .2, the file -> .1."""
    for number in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{number + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))


def test_tail_reads_back_across_rotated_files_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "app.out.log"
    written = 0
    for _ in range(3):
        log.write_text("".join(f"line {written + i}\n" for i in range(1, 1001)))
        written += 1000
        rotate(log, keep=5)
    log.write_text("line 3001\nline 3002\n")
    assert rotated_files(log) == [log.with_name(f"app.out.log.{n}") for n in (3, 2, 1)] + [log]
    assert tail(log, 2) == ["line 3001", "line 3002"]
    assert tail(log, 5) == ["line 2998", "line 2999", "line 3000", "line 3001", "line 3002"]
    assert tail(log, 10_000) == [f"line {n}" for n in range(1, 3003)]
    assert tail(log, 0) == [] and tail(tmp_path / "none.log", 5) == []


def test_follower_reads_on_across_rotations_and_late_writes_to_the_renamed_file(tmp_path: Path) -> None:
    log = tmp_path / "app.out.log"
    log.write_text("before\n")
    follower = Follower(log)
    follower.start_at_end()
    seen: list[str] = []
    writer = log.open("a")
    number = 0
    for round_ in range(4):
        for _ in range(3):
            number += 1
            writer.write(f"line {number}\n")
        writer.flush()
        seen += follower.poll(float(round_))
        rotate(log, keep=2)
        number += 1
        writer.write(f"line {number}\n")  # a worker that has not reopened yet: into the renamed file
        writer.write("half a li")
        writer.flush()
        seen += follower.poll(float(round_) + 0.1)
        writer.write("ne\n")
        writer.flush()
        writer.close()
        writer = log.open("a")
    seen += follower.poll(10.0)
    follower.close()
    numbered = [line for line in seen if line.startswith("line ")]
    assert numbered == [f"line {n}" for n in range(1, number + 1)]
    assert seen.count("half a line") == 4 and "before" not in seen


def test_the_follower_lets_go_of_a_renamed_file_after_the_grace(tmp_path: Path) -> None:
    log = tmp_path / "app.out.log"
    log.write_text("")
    follower = Follower(log)
    follower.start_at_end()
    rotate(log, keep=1)
    log.write_text("")
    follower.poll(0.0)
    assert len(follower.open_files) == 2
    follower.poll(ROTATED_GRACE + 0.5)
    assert len(follower.open_files) == 1
    assert os.fstat(follower.open_files[0][0].fileno()).st_ino == log.stat().st_ino
    follower.close()


def test_logs_settings(tmp_path: Path) -> None:
    assert size_bytes("64K") == 65536 and size_bytes("10M") == 10 * 1024**2 and size_bytes("2G") == 2 * 1024**3
    base = {"app": {"name": "a", "source": "app"}, "server": {"root": "root"}}
    config = parse_config(base, tmp_path)
    assert (config.logs.max_size, config.logs.keep, config.logs.max_bytes) == ("10M", 5, 10 * 1024**2)
    for bad in ({"max_size": "10MB"}, {"max_size": "0K"}, {"max_size": "12"}, {"keep": 0}):
        with pytest.raises(ConfigError) as error:
            parse_config({**base, "logs": bad}, tmp_path)
        assert any(line.startswith(f"logs.{next(iter(bad))}:") for line in error.value.details), error.value.details
