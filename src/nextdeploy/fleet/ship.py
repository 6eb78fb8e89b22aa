"""Shipping a release to every host, in parallel, as a delta against what each host already has.

The release is assembled on the controller (``<dir>/<id>``, as the builder makes it) and lands on each
host as ``<root>/releases/<id>``:

- into ``<root>/releases/.ship-<id>`` first, renamed to ``<id>`` once complete (``mv -T``, one rename on the
  host): a half-shipped release never looks complete, and a ship cut off is resumed from what arrived;
- with ``--link-dest`` against the host's live release and the most recent others: a file identical to one
  there becomes a hard link on the host, as a local deploy's dependency files do; and ``--checksum``, so a
  fresh build's files are compared by content, not by mtime;
- but never a hard link for what the app may rewrite at runtime: everything under the app's ``.next/``
  except ``.next/static`` (ISR writes under ``.next/server``) is shipped in a second pass with
  ``--copy-dest``: identical files are copied on the host from the live release, not sent, and not shared;
- mtimes normalised first: rsync hard-links a file only when its attributes match, mtime included, and a
  build gives every file a new one. Each file's mtime is derived from its content (identical bytes, identical
  mtime, on every host and in every release; different bytes, a different mtime, so ``Last-Modified`` and
  the ``ETag`` Next derives from it change with the content). Not under ``.next/`` outside ``static``: those
  are never linked, and Next reads their mtimes (a prerendered ISR page's age).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.errors import HostPathError
from nextdeploy.core.ids import is_release_id
from nextdeploy.core.manifest import layout_of
from nextdeploy.core.paths import META_DIR
from nextdeploy.fleet.parallel import on_every_host
from nextdeploy.remote.errors import last_line
from nextdeploy.remote.ssh import SshTransport

MTIME_BASE = 946_684_800  # 2000-01-01 UTC: every normalised mtime lies in the 8.5 years after it
MTIME_SPAN = 1 << 28
LINK_DESTS = 3  # the live release and the most recent others: rsync looks for each file in them in turn
SHIP_TIMEOUT = 1800.0  # seconds for one pass of rsync to one host


@dataclass(frozen=True)
class ShipResult:
    """What shipping did on one host."""

    host: str
    release_dir: str  # on the host
    bytes_sent: int  # over the connection: file list, checksums, deltas, new files
    literal_bytes: int  # file contents sent as is (found nowhere on the host)
    files_transferred: int
    release_bytes: int  # the size of the release's regular files
    link_dests: tuple[str, ...]  # the host's releases it was compared with
    seconds: float

    @property
    def sent_fraction(self) -> float:
        return self.bytes_sent / self.release_bytes if self.release_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "release_dir": self.release_dir, "bytes_sent": self.bytes_sent,
                "literal_bytes": self.literal_bytes, "files_transferred": self.files_transferred,
                "release_bytes": self.release_bytes, "link_dests": list(self.link_dests),
                "seconds": round(self.seconds, 3)}


def content_mtime(data_digest: bytes) -> int:
    """The normalised mtime of a file whose content hashes to ``data_digest``."""
    return MTIME_BASE + int.from_bytes(data_digest[:8], "big") % MTIME_SPAN


def normalise_mtimes(release_dir: Path, keep: str | None = None) -> int:
    """Give every regular file under ``release_dir`` its content-derived mtime (symlinks and dirs as they
    are), but those under ``keep`` (relative: the app's ``.next``, whose files are never hard links and
    whose mtimes Next reads, e.g. as an ISR page's age) outside its ``static/``. Returns the total size of
    the release's regular files."""
    total = 0
    kept = release_dir / keep if keep else None
    for dirpath, _dirnames, filenames in os.walk(release_dir):
        inside = Path(dirpath)
        untouched = kept is not None and inside.is_relative_to(kept) and not inside.is_relative_to(kept / "static")
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                continue
            total += info.st_size
            if untouched:
                continue
            digest = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            mtime = content_mtime(digest.digest())
            if int(info.st_mtime) != mtime or info.st_mtime_ns % 1_000_000_000:
                os.utime(path, (mtime, mtime), follow_symlinks=False)
    return total


def link_dests(live: str | None, on_host: list[str], release_id: str) -> list[str]:
    """The host's releases to compare with (ids): the live one first, then the newest others."""
    others = sorted((name for name in on_host if is_release_id(name) and name not in (release_id, live)),
                    reverse=True)
    return ([live] if live and live != release_id else []) + others[: LINK_DESTS - (1 if live else 0)]


# On the host, three lines: the live release's id (or nothing); the names under releases/ (space-separated);
# "done" when the release is already there. $1 root, $2 release id.
_LOOK = r"""
cd "$1" 2>/dev/null || { echo; echo; exit 0; }
target=$(readlink current 2>/dev/null) && basename "$target" || echo
ls -1 releases 2>/dev/null | tr '\n' ' '; echo
if [ -d "releases/$2" ]; then echo done; fi
"""

# $1 the temp dir, $2 the release dir: the one rename that makes the release appear complete.
_RENAME = 'mv -T -- "$1" "$2"'


def next_dir(app_rel: str) -> str:
    """The app's ``.next`` relative to the release root."""
    return posixpath.join(app_rel, ".next") if app_rel else ".next"


def ship_to_host(transport: SshTransport, host: str, root: str, release_dir: Path, release_bytes: int,
                 timeout: float = SHIP_TIMEOUT) -> ShipResult:
    """Send ``release_dir`` to ``host``'s ``<root>/releases/<id>`` (see the module's doc); raises an
    ``SshError`` (the connection) or a ``HostPathError`` (its files), naming the host, if it cannot."""
    started = time.monotonic()
    release_id = release_dir.name
    layout = layout_of(release_dir)
    if layout is None:
        raise ValueError(f"{release_dir} is not a complete release (no {META_DIR}/manifest.json)")
    looked = transport.run(host, ["sh", "-c", _LOOK, "sh", root, release_id], timeout=60)
    if not looked.ok:
        raise HostPathError(f"cannot read {root}/releases on {host}: {last_line(looked.error_text)}",
                            hint=f"check that {root} on {host} is readable by the ssh user")
    lines = looked.text.split("\n")
    live = lines[0].strip() or None
    on_host = lines[1].split() if len(lines) > 1 else []
    already = len(lines) > 2 and lines[2].strip() == "done"
    releases = posixpath.join(root, "releases")
    final = posixpath.join(releases, release_id)
    # An existing release is only compared and repaired (same id, same build: nothing to send).
    target = final if already else posixpath.join(releases, f".ship-{release_id}")
    dests = [posixpath.join(releases, name) for name in link_dests(live, on_host, release_id)]
    next_rel = next_dir(layout.app_rel)
    # Pass 1: all but the app's .next/ (its static/ included), hard links to identical files.
    first = transport.rsync(
        host, release_dir, target, checksum=True, timeout=timeout,
        options=[*(f"--link-dest={dest}" for dest in dests),
                 f"--filter=+ /{next_rel}/", f"--filter=+ /{next_rel}/static/***", f"--filter=- /{next_rel}/*"],
    )
    # Pass 2: the rest of .next/, identical files copied on the host, never shared with another release.
    passes = [first]
    if (release_dir / next_rel).is_dir():
        passes.append(transport.rsync(
            host, release_dir / next_rel, posixpath.join(target, next_rel), checksum=True, timeout=timeout,
            options=[*(f"--copy-dest={posixpath.join(dest, next_rel)}" for dest in dests), "--filter=- /static/"],
        ))
    if not already:
        renamed = transport.run(host, ["sh", "-c", _RENAME, "sh", target, final], timeout=60)
        if not renamed.ok:
            raise HostPathError(f"cannot rename {target} to {final} on {host}: {last_line(renamed.error_text)}",
                                hint=f"check {releases} on {host} (a file or a non-empty dir named {release_id} "
                                     "in the way?)")
    return ShipResult(host, final, sum(p.bytes_sent for p in passes), sum(p.literal_bytes for p in passes),
                      sum(p.files_transferred for p in passes), release_bytes, tuple(dests),
                      time.monotonic() - started)


def ship(transport: SshTransport, roots: Mapping[str, str], release_dir: Path, *,
         on_done: Callable[[ShipResult], None] | None = None) -> dict[str, ShipResult]:
    """Ship ``release_dir`` to every host of ``roots`` (host -> its deploy root) at once.

    Every host is finished (shipped or failed) before this returns; the first failure in ``roots``' order
    is raised then (a ``NextdeployError`` naming its host). ``on_done`` is called from the host's thread."""
    layout = layout_of(release_dir)
    if layout is None:
        raise ValueError(f"{release_dir} is not a complete release (no {META_DIR}/manifest.json)")
    release_bytes = normalise_mtimes(release_dir, keep=next_dir(layout.app_rel))

    def one(host: str) -> ShipResult:
        result = ship_to_host(transport, host, roots[host], release_dir, release_bytes)
        if on_done is not None:
            on_done(result)
        return result

    return dict(zip(roots, on_every_host(list(roots), one), strict=True))
