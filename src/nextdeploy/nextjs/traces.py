"""The ``*.nft.json`` traces of a build: which files the server loads, and where they are in a release.

A trace lists paths relative to its own folder (``files``), and links among them (``symlinks``: pairs of
an index into ``files`` and the link's target, also relative to the trace's folder). A release mirrors
the tracing root (``outputFileTracingRoot``, else the app dir): a traced file at ``<root>/x/y`` is at
``<release>/x/y``, and the app's ``.next`` is at ``<release>/<app_rel>/.next``.

The server uses ``.next/next-server.js.nft.json`` plus one trace per route under ``.next/server/``.
``next-minimal-server.js.nft.json`` is for Next's minimal mode and is ignored. Standalone output does not
keep the traces, so they are read from the build dir while the release is assembled.

A path that leaves the tracing root is rejected, never copied: a crafted trace must not make a deploy
copy arbitrary files of the build host into a release.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from nextdeploy.core.errors import ReleaseError

SERVER_TRACE = "next-server.js.nft.json"
MINIMAL_SERVER_TRACE = "next-minimal-server.js.nft.json"
# Written by traced mode into the build when Next traced for `next start` only (see nextjs.traced).
EXTRA_SERVER_TRACE = "nextdeploy-server.js.nft.json"
MAX_LISTED = 20


@dataclass(frozen=True)
class Trace:
    """One parsed ``.nft.json``: paths as written in it (relative to ``folder``)."""

    folder: str  # absolute, forward slashes
    files: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...] = ()  # (link path, target path), both as written


@dataclass
class TraceSet:
    """Every traced path of a build, relative to the tracing root."""

    files: set[str] = field(default_factory=set)
    symlinks: dict[str, str] = field(default_factory=dict)  # link -> target, both root-relative
    escaping: list[str] = field(default_factory=list)  # as written, "<trace>: <path>"


def parse_trace(text: str, folder: str) -> Trace:
    """Parse one trace's JSON; raises ValueError when it is not a trace."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("not an .nft.json trace (no 'files' list)")
    files = tuple(str(entry) for entry in data["files"])
    links: list[tuple[str, str]] = []
    for pair in data.get("symlinks") or []:
        if (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)
                and 0 <= pair[0] < len(files) and isinstance(pair[1], str)):
            links.append((files[pair[0]], pair[1]))
        else:
            raise ValueError(f"bad 'symlinks' entry {pair!r}")
    return Trace(folder, files, tuple(links))


def root_relative(folder: str, entry: str, root: str) -> str | None:
    """``entry`` of a trace in ``folder`` as a path relative to ``root``; None if it leaves the root.

    Purely lexical (``..`` is resolved on the text, links are not followed), like Next's own copy.
    An absolute entry, or one that climbs above the root, leaves it."""
    if not entry or "\0" in entry:
        return None
    joined = posixpath.normpath(posixpath.join(folder, entry.replace("\\", "/")))
    relative = posixpath.relpath(joined, root)
    if relative == "." or relative == ".." or relative.startswith("../"):
        return None
    return relative


def merge_traces(traces: Iterable[Trace], root: str) -> TraceSet:
    """All traced paths relative to ``root``, with the ones that leave it set aside."""
    result = TraceSet()
    for trace in traces:
        for entry in trace.files:
            relative = root_relative(trace.folder, entry, root)
            if relative is None:
                result.escaping.append(entry)
            else:
                result.files.add(relative)
        for link, target in trace.symlinks:
            link_rel, target_rel = root_relative(trace.folder, link, root), root_relative(trace.folder, target, root)
            if link_rel is None or target_rel is None:
                result.escaping.append(f"{link} -> {target}")
            else:
                result.symlinks[link_rel] = target_rel
    return result


def trace_paths(next_dir: Path) -> list[Path]:
    """The traces the server uses: the server trace and every route trace (not the minimal server's)."""
    paths = [next_dir / name for name in (SERVER_TRACE, EXTRA_SERVER_TRACE) if (next_dir / name).is_file()]
    server_dir = next_dir / "server"
    if server_dir.is_dir():
        paths.extend(sorted(server_dir.rglob("*.nft.json")))
    return paths


def read_traces(next_dir: Path, root: Path) -> TraceSet:
    """Read and merge the server's traces from a build's ``.next`` (reads files only).

    Raises ReleaseError when there is no server trace or a trace cannot be parsed."""
    paths = trace_paths(next_dir)
    if not (next_dir / SERVER_TRACE).is_file():
        raise ReleaseError(
            f"the build has no server trace ({next_dir / SERVER_TRACE})",
            hint="do not disable output file tracing in next.config; nextdeploy needs the traces",
        )
    traces = []
    for path in paths:
        try:
            traces.append(parse_trace(path.read_text(encoding="utf-8"), path.parent.as_posix()))
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read the trace {path}: {exc}",
                               hint="rebuild; if it persists, report it with the file attached") from None
    return merge_traces(traces, root.as_posix())


def reject_escaping(traces: TraceSet, root: Path) -> None:
    """Raise ReleaseError if any traced path leaves the tracing root."""
    if traces.escaping:
        raise ReleaseError(
            f"the build's traces name {len(traces.escaping)} path(s) outside the tracing root {root}; "
            "nothing of them was copied",
            hint="a trace may only name files under outputFileTracingRoot: check outputFileTracingIncludes "
                 "and any build step that writes .nft.json files",
            details=listing(traces.escaping),
        )


def listing(paths: Iterable[str], limit: int = MAX_LISTED) -> list[str]:
    """Up to ``limit`` paths as detail lines, then how many more."""
    ordered = sorted(paths)
    lines = [f"  {path}" for path in ordered[:limit]]
    if len(ordered) > limit:
        lines.append(f"  ... and {len(ordered) - limit} more")
    return lines


@dataclass(frozen=True)
class ReleasePaths:
    """The traced paths a release lacks, and its traced links that lead out of it."""

    missing: list[str]
    escaping: list[str]  # "<link> -> <target as written>"


def check_release_paths(release_dir: Path, relative_paths: Iterable[str]) -> ReleasePaths:
    """Which of ``relative_paths`` are absent from ``release_dir``, and which are links leading out of it.
    Reads only (one lstat per path, a readlink per link).

    A link whose target is absent is not missing: pnpm's hoisted links (``node_modules/.pnpm/node_modules/
    <name>``) are traced when module resolution passes them, and standalone copies them without the package
    they point at when the server never loads a file of it. Every file the server loads is traced itself,
    and is missing if absent (also when a dangling link stands in its path)."""
    missing: list[str] = []
    escaping: list[str] = []
    real_root = os.path.realpath(release_dir)
    for relative in sorted(relative_paths):
        path = release_dir / relative
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            missing.append(relative)
            continue
        if is_link and os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            escaping.append(f"{relative} -> {os.readlink(path)}")
    return ReleasePaths(missing, escaping)


# --- [release] include / exclude --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over forward-slash paths: ``*`` and ``?`` stay within one segment, ``**`` spans any."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:[^/]*/)*")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out) + r"\Z")


def glob_matches(pattern: str, path: str) -> bool:
    """Whether ``path`` or one of its parent folders matches ``pattern`` (so ``content`` takes its files)."""
    regex = glob_regex(pattern.strip("/"))
    parts = path.split("/")
    return any(regex.match("/".join(parts[:end])) for end in range(len(parts), 0, -1))


def _literal_prefix(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard: where a walk for it can start."""
    parts = []
    for part in pattern.strip("/").split("/"):
        if any(char in part for char in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def walk_files(base: Path, start: str = "", prune: Collection[str] = ()) -> Iterator[str]:
    """Files and symlinks under ``base/start``, relative to ``base``, without entering links to folders or
    folders named in ``prune``. Reads the disk."""
    top = base / start if start else base
    if top.is_symlink() or top.is_file():
        yield start
        return
    for dirpath, dirnames, filenames in os.walk(top):
        relative_dir = posixpath.relpath(Path(dirpath).as_posix(), base.as_posix())
        links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        dirnames[:] = [name for name in dirnames if name not in prune and name not in links]
        for name in filenames + links:
            yield name if relative_dir == "." else f"{relative_dir}/{name}"


def included_files(source_root: Path, patterns: Iterable[str]) -> list[str]:
    """Files under ``source_root`` matching ``[release] include`` (relative to it). Reads the disk.

    Each pattern is walked from its literal folder prefix; ``node_modules`` and ``.git`` below that
    prefix are entered only when the pattern names them."""
    found: set[str] = set()
    for pattern in patterns:
        prefix = _literal_prefix(pattern)
        if prefix and not os.path.lexists(source_root / prefix):
            continue
        named = set(pattern.split("/"))
        prune = {name for name in ("node_modules", ".git") if name not in named}
        found.update(path for path in walk_files(source_root, prefix, prune) if glob_matches(pattern, path))
    return sorted(found)


def excluded_files(candidates: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The candidates that match any ``[release] exclude`` pattern."""
    pattern_list = list(patterns)
    return sorted(path for path in candidates if any(glob_matches(p, path) for p in pattern_list))
