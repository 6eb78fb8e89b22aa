"""Facts about one finished ``next build``, read from ``.next/required-server-files.json``.

That file holds the resolved next.config (``config``), the app dir at build time (``appDir``) and the
app's path below the tracing root (``relativeAppDir``). Reads files only.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.paths import SourceLayout


@dataclass(frozen=True)
class BuildOutput:
    """The parts of a build the release checks need."""

    app_dir: Path  # the app in the build dir (where .next is)
    tracing_root: Path  # outputFileTracingRoot, else the app dir
    app_rel: str  # the app below the tracing root, '' when they are the same
    next_config: dict[str, Any] = field(default_factory=dict)
    required_files: tuple[str, ...] = ()  # relative to the app dir

    @property
    def next_dir(self) -> Path:
        return self.app_dir / ".next"

    def root_rel(self, path: Path) -> str:
        """``path`` (absolute, under the tracing root) relative to it, with forward slashes."""
        return PurePosixPath(posixpath.relpath(str(path), str(self.tracing_root))).as_posix()


def read_required_server_files(next_dir: Path) -> dict[str, Any]:
    """``.next/required-server-files.json``; raises ReleaseError when it is missing or unreadable."""
    path = next_dir / "required-server-files.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(
            f"cannot read {path}: {exc}",
            hint="check that `next build` finished (nextdeploy needs Next.js >= 13.4 output)",
        ) from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{path} is not a JSON object", hint="check that `next build` finished")
    return data


def tracing_root_of(config: dict[str, Any], app_dir: Path) -> Path:
    """``outputFileTracingRoot`` from the resolved config, else the app dir (Next's own default)."""
    value = config.get("outputFileTracingRoot") or (config.get("experimental") or {}).get("outputFileTracingRoot")
    return Path(value) if isinstance(value, str) and value else app_dir


def inspect_build(source: SourceLayout) -> BuildOutput:
    """Read the build in ``source``; raises ReleaseError when the app is not under its tracing root."""
    app_dir = source.app_dir.resolve()
    required = read_required_server_files(source.next_dir)
    config = required.get("config") if isinstance(required.get("config"), dict) else {}
    assert isinstance(config, dict)
    # Real paths on both sides: the config may name the root through a symlink (/tmp on some systems).
    tracing_root = tracing_root_of(config, app_dir).resolve()
    relative = posixpath.relpath(str(app_dir), str(tracing_root))
    if relative == ".." or relative.startswith("../"):
        raise ReleaseError(
            f"the app ({app_dir}) is not inside its tracing root ({tracing_root})",
            hint="set outputFileTracingRoot in next.config to a folder that contains the app (the workspace root)",
        )
    declared = required.get("relativeAppDir")
    app_rel = "" if relative == "." else relative
    if isinstance(declared, str) and declared.strip("/") not in ("", app_rel):
        raise ReleaseError(
            f"required-server-files.json says the app is at {declared!r} below the tracing root, not {app_rel!r}",
            hint="rebuild from a clean checkout; the build output does not match its source",
        )
    files = tuple(str(f) for f in required.get("files", []) if isinstance(f, str))
    return BuildOutput(app_dir, tracing_root, app_rel, config, files)
