"""Reading the app's logs across their rotations (``nextdeploy logs``).

The launcher in every worker appends the app's lines to ``<root>/logs/pm2-<app>.out.log`` / ``.err.log`` and
rotates a file by renaming it to ``.1`` (``.1`` to ``.2``, ...). So the lines of a stream, oldest first, are in
``.N`` ... ``.1`` then the file itself; a worker that has not reopened yet may still append to ``.1`` for a
moment after a rotation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_BLOCK = 64 * 1024
# After a rotation, a reader keeps the renamed file open this long: a worker writes there until it reopens.
ROTATED_GRACE = 2.0


def rotated_files(path: Path) -> list[Path]:
    """``path``'s rotated files and ``path`` itself, oldest first (those that exist)."""
    rotated = []
    number = 1
    while (candidate := path.with_name(f"{path.name}.{number}")).is_file():
        rotated.append(candidate)
        number += 1
    return [*reversed(rotated), *([path] if path.is_file() else [])]


def _last_lines(path: Path, count: int) -> list[bytes]:
    """At most the last ``count`` complete lines of one file (read from its end)."""
    try:
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            data = b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - _BLOCK)
                file.seek(start)
                data = file.read(end - start) + data
                end = start
    except OSError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if end > 0:
        lines = lines[1:]  # the first piece may be the end of an earlier line
    return lines[-count:] if count > 0 else []


def tail(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a stream, across its rotated files."""
    lines: list[bytes] = []
    for file in reversed(rotated_files(path)):
        if len(lines) >= count:
            break
        lines = _last_lines(file, count - len(lines)) + lines
    return [line.decode("utf-8", errors="replace") for line in lines]


@dataclass
class Follower:
    """New lines of one stream as they come, across rotations: the open file is read to its end, and kept
    open for ``ROTATED_GRACE`` seconds after ``path`` became another file (a rotation), beside the new one."""

    path: Path
    open_files: list[tuple[BinaryIO, float | None]] = field(default_factory=list)  # (file, retired at)
    partial: dict[int, bytes] = field(default_factory=dict)

    def start_at_end(self) -> None:
        file = self._open()
        if file is not None:
            file.seek(0, os.SEEK_END)

    def _open(self) -> BinaryIO | None:
        try:
            file = self.path.open("rb")
        except OSError:
            return None
        self.open_files.append((file, None))
        return file

    def poll(self, now: float) -> list[str]:
        """The complete lines written since the last poll."""
        lines: list[str] = []
        for file, _ in self.open_files:
            data = self.partial.pop(id(file), b"") + file.read()
            *complete, rest = data.split(b"\n")
            if rest:
                self.partial[id(file)] = rest
            lines.extend(line.decode("utf-8", errors="replace") for line in complete)
        try:
            current = os.stat(self.path)
        except OSError:
            current = None
        live = [entry for entry in self.open_files if entry[1] is None]
        if current is not None and not any(_same_file(file, current) for file, _ in live):
            self.open_files = [(file, now if retired is None else retired) for file, retired in self.open_files]
            new = self._open()
            if new is not None:
                lines.extend(self.poll(now))  # what the new file already has
        for file, retired in list(self.open_files):
            if retired is not None and now - retired > ROTATED_GRACE:
                file.close()
                self.open_files.remove((file, retired))
        return lines

    def close(self) -> None:
        for file, _ in self.open_files:
            file.close()
        self.open_files = []


def _same_file(file: BinaryIO, stat: os.stat_result) -> bool:
    mine = os.fstat(file.fileno())
    return (mine.st_dev, mine.st_ino) == (stat.st_dev, stat.st_ino)


def follow(paths: list[Path], emit: Callable[[Path, str], None], interval: float = 0.2,
           until: Callable[[], bool] = lambda: False) -> None:
    """Emit every new line of ``paths`` (each followed across rotations) until ``until()`` or Ctrl-C."""
    followers = [Follower(path) for path in paths]
    for follower in followers:
        follower.start_at_end()
    try:
        while not until():
            now = time.monotonic()
            for follower in followers:
                for line in follower.poll(now):
                    emit(follower.path, line)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        for follower in followers:
            follower.close()
