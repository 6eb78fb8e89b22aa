"""Does this host fit the release? Node against ``engines.node`` of ``next``, the PM2 daemon's Node against
the build's, and sharp for ``next/image``.

Sharp policy (``[release] sharp_check``, default ``"fail"``): when the app uses ``next/image`` with
optimisation on, the release must be able to load sharp - from where Next loads it, with the host's
Node - or the deploy fails before the switch. Without sharp every ``/_next/image`` request answers 500,
which no health check sees; the usual cause is a build on another OS/arch/libc, or a pnpm install that
skipped the platform package (next.js#59346). ``"warn"`` only warns, ``"off"`` skips the check.

"Uses next/image" is a heuristic (documented in the config reference): a source file of the app
(``.js .jsx .ts .tsx .mjs .cjs .mdx`` outside ``node_modules``, ``.next`` and ``.git``) imports
``next/image`` or ``next/legacy/image``. Optimisation is on unless ``images.unoptimized`` is true or
``images.loader`` is not ``"default"`` (a custom loader sends images elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextdeploy.core.errors import ToolMissingError
from nextdeploy.nextjs.semver import parse_version, satisfies

SOURCE_SUFFIXES = frozenset({".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".mdx"})
SKIPPED_FOLDERS = frozenset({"node_modules", ".next", ".git", ".turbo", ".vercel", "out", "dist"})
_IMAGE_IMPORT = re.compile(r"""(?:from\s*|import\s*\(?\s*|require\s*\(\s*)["']next/(?:legacy/)?image["']""")
MAX_SOURCE_BYTES = 2_000_000
# On-demand revalidation (revalidatePath/Tag, updateTag, the pages router's res.revalidate) or a time-based
# one in fetch/unstable_cache options (`revalidate: 60`; 0 and false cache nothing).
_REVALIDATES = re.compile(r"""\b(?:revalidatePath|revalidateTag|updateTag|unstable_expire(?:Path|Tag))\s*\(|"""
                          r"""\.revalidate\s*\(|\brevalidate\s*:\s*[1-9]""")

# Run with the host's node from the app folder of the release: load sharp the way Next does (resolved from
# next's own folder), and name the platform package sharp wants on this host.
_SHARP_PROBE = r"""
const path = require('path');
const glibc = process.report && process.report.getReport().header.glibcVersionRuntime;
const libc = process.platform === 'linux' && !glibc ? 'musl' : '';
const expected = `@img/sharp-${process.platform}${libc}-${process.arch}`;
let result = { ok: true, expected };
try {
  const nextDir = path.dirname(require.resolve('next/package.json', { paths: [process.cwd()] }));
  require(require.resolve('sharp', { paths: [nextDir] }));
} catch (err) {
  result = { ok: false, expected, error: String((err && err.message) || err).split('\n')[0] };
}
process.stdout.write(JSON.stringify(result));
"""


def runtime_node_problem(pm2_home: Path, daemon_node: str, daemon_version: str | None, node: str,
                         version: str) -> ToolMissingError | None:
    """Why the PM2 daemon's Node, another binary than ``node`` (``daemon_version`` None: it is gone), cannot
    run a release built and checked with ``node``; None when it is the same version."""
    if daemon_version == version:
        return None
    fix = (f"restart PM2 on this Node with `PM2_HOME={pm2_home} pm2 update` (it saves and restores its apps; "
           "the site is down for a few seconds)")
    if daemon_version is None:
        return ToolMissingError(
            f"PM2's daemon (PM2_HOME={pm2_home}) runs Node from {daemon_node}, which no longer exists: it could "
            "start no new worker",
            hint=fix,
        )
    return ToolMissingError(
        f"PM2's daemon (PM2_HOME={pm2_home}) runs Node {daemon_version} ({daemon_node}), but node on PATH is "
        f"{version} ({node}): the workers would run on {daemon_version}, not on the Node the release is built and "
        "checked with",
        hint=f"{fix}, or put Node {daemon_version} first on PATH",
    )


def built_node_problem(runtime_version: str | None, built_version: str | None) -> str | None:
    """Why the live release may misbehave on the Node PM2 runs it on (``pm2 update`` onto another Node after
    the deploy: a native module built for the old one fails to load); None when they agree or are unknown."""
    if not runtime_version or not built_version or runtime_version == built_version:
        return None
    return (f"the workers run on Node {runtime_version}, but the live release was built with Node {built_version}: "
            f"deploy again to build it on {runtime_version}")


def node_engine_problem(node_version: str, engines_node: str | None) -> str | None:
    """Why ``node_version`` does not satisfy ``engines_node``, or None (also when the range is unreadable)."""
    if not engines_node:
        return None
    try:
        if satisfies(parse_version(node_version.lstrip("v")), engines_node):
            return None
    except ValueError:
        return None  # a range this matcher cannot read never blocks a deploy
    return f"this host runs Node {node_version.lstrip('v')}, but next needs node {engines_node}"


def next_engines(app_dir: Path) -> str | None:
    """``engines.node`` of the ``next`` package the release runs (its ``node_modules/next``). Reads files."""
    try:
        data = json.loads((app_dir / "node_modules" / "next" / "package.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    engines = data.get("engines") if isinstance(data, dict) else None
    value = engines.get("node") if isinstance(engines, dict) else None
    return value if isinstance(value, str) else None


def image_optimization_on(next_config: dict[str, Any]) -> bool:
    """Next optimises images itself (so it needs sharp) unless ``unoptimized`` or a custom loader."""
    images = next_config.get("images") or {}
    if not isinstance(images, dict):
        return True
    return not images.get("unoptimized") and images.get("loader", "default") == "default"


def imports_next_image(text: str) -> bool:
    """Whether source text imports ``next/image`` (or ``next/legacy/image``)."""
    return bool(_IMAGE_IMPORT.search(text))


def _source_files(source_root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(source_root):
        dirnames[:] = [name for name in dirnames if name not in SKIPPED_FOLDERS]
        for name in filenames:
            if os.path.splitext(name)[1] in SOURCE_SUFFIXES:
                yield Path(dirpath) / name


def uses_next_image(source_root: Path) -> bool:
    """The heuristic above, over the whole source (a monorepo's shared UI package counts). Reads files."""
    return _any_source_file(source_root, imports_next_image)


def revalidates(text: str) -> bool:
    """Whether source text revalidates cached pages or data (see ``_REVALIDATES``)."""
    return bool(_REVALIDATES.search(text))


def _any_source_file(source_root: Path, matches: Callable[[str], bool]) -> bool:
    for path in _source_files(source_root):
        try:
            if path.stat().st_size <= MAX_SOURCE_BYTES and matches(path.read_text("utf-8", "replace")):
                return True
        except OSError:
            continue
    return False


def revalidates_in_source(source_root: Path) -> bool:
    """``revalidates`` over the whole source. Reads files."""
    return _any_source_file(source_root, revalidates)


@dataclass(frozen=True)
class SharpProbe:
    ok: bool
    expected: str  # the platform package sharp needs here, e.g. @img/sharp-linux-x64
    error: str | None = None


def probe_sharp(node: str, app_dir: Path, timeout: float = 30) -> SharpProbe:
    """Load sharp in the release with the host's Node, from where Next loads it. Runs node."""
    try:
        completed = subprocess.run([node, "-e", _SHARP_PROBE], cwd=app_dir, capture_output=True, text=True,
                                   timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        data = json.loads(completed.stdout)
        return SharpProbe(bool(data["ok"]), str(data["expected"]), data.get("error"))
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, TypeError) as exc:
        return SharpProbe(False, "@img/sharp-<platform>-<arch>", f"the probe itself failed: {exc}")
