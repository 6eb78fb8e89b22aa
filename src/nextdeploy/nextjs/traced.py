"""``[release] mode = "traced"``: assemble a release from the build's traces, without ``.next/standalone``.

The release holds what standalone would: every file of the server trace and of each route trace (links
kept as links, so the pnpm layout works), the app's ``.next`` without its build cache and build-only
files, ``public``, ``package.json``, ``.env``/``.env.production`` like standalone, and a generated
``server.js`` equivalent to standalone's (the resolved next.config from required-server-files.json,
then ``startServer``). PM2 cannot run ``next start`` in cluster mode (next.js#41011); the launcher runs
this ``server.js`` exactly as it runs standalone's.

The app may set ``output: 'standalone'`` or not; ``.next/standalone`` is never read. Without it Next's
server trace covers ``next start`` only, so the files a standalone server loads on top are traced once
more here with Next's own tracer: an extra pass (17-27 s measured on 2 busy cores) whose result is
cached in ``<root>/cache/traces`` per lockfile and Next.js package, so later deploys skip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.core.errors import ReleaseError
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.nextjs.build import BuildOutput
from nextdeploy.nextjs.traces import (
    EXTRA_SERVER_TRACE,
    TraceSet,
    listing,
    merge_traces,
    parse_trace,
    reject_escaping,
)
from nextdeploy.plans.ops import CopyFile, CopyTree, MakeDirs, Op, Symlink, WriteFile

# Without output: 'standalone', Next's server trace leaves out what only a standalone server.js loads
# (next/dist/server/lib/start-server, next/dist/server/next, require-hook, jest-worker's children):
# `next start` finds them in node_modules. Traced mode traces them itself with Next's bundled
# @vercel/nft, with the options and ignores Next uses for standalone (build/collect-build-traces.js).
_TRACE_SERVER_ENTRIES = r"""
const fs = require('fs');
const path = require('path');
const [root, out] = process.argv.slice(1);
const nextDir = path.dirname(require.resolve('next/package.json', { paths: [process.cwd()] }));
const { nodeFileTrace } = require(path.join(nextDir, 'dist/compiled/@vercel/nft'));
const picomatch = require(path.join(nextDir, 'dist/compiled/picomatch'));
const entries = ['dist/server/lib/start-server.js', 'dist/server/next.js', 'dist/server/require-hook.js',
  'dist/compiled/jest-worker/processChild.js',
  'dist/compiled/jest-worker/threadChild.js'].map((f) => path.join(nextDir, f)).filter((f) => fs.existsSync(f));
const ignored = picomatch([
  '**/next/dist/compiled/next-server/**/*.dev.js', '**/next/dist/compiled/webpack/*', '**/node_modules/webpack5/**/*',
  '**/next/dist/server/lib/route-resolver*', '**/next/dist/lib/upgrade/**/*',
  '**/next/dist/compiled/@mswjs/interceptors/ClientRequest/LICENSE',
  '**/next/dist/compiled/@mswjs/interceptors/ClientRequest/llhttp/**/*', 'next/dist/compiled/semver/semver/**/*.js',
  '**/node_modules/react{,-dom,-dom-server-turbopack}/**/*.development.js', '**/*.d.ts', '**/*.map',
  '**/next/dist/pages/**/*', '**/.next/server/chunks/**',
], { contains: true, dot: true });
nodeFileTrace(entries, { base: root, processCwd: process.cwd(), mixedModules: true, moduleSyncCatchall: true,
  ignore: (p) => ignored(p) }).then((result) => {
  const files = new Set([...result.fileList, ...result.esmFileList]);
  const relative = [...files].map((f) => path.relative(path.dirname(out), path.join(root, f)).replace(/\\/g, '/'));
  fs.writeFileSync(out, JSON.stringify({ version: 1, files: relative.sort() }));
}).catch((err) => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
"""
# Without standalone, Next's trace ignores next/dist/server/next.js (TRACE_IGNORES) but server.js loads it.
STANDALONE_ONLY = ("next/dist/server/next.js", "next/dist/server/lib/start-server.js")

# Top-level entries of .next that the server never reads (standalone leaves them out too).
BUILD_ONLY = frozenset({"cache", "standalone", "trace", "trace-build", "types", "diagnostics", "turbopack"})
# Copied beside package.json when present, as standalone does (.env.local is not: it is for development).
ENV_FILES = (".env", ".env.production")


@dataclass
class TracedCopy:
    """How each traced path is recreated: copied files and folders, and links (target relative to the link)."""

    files: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    escaping: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _escapes(relative: str) -> bool:
    return relative in ("", ".", "..") or relative.startswith("../") or relative.startswith("/")


def link_target(root: Path, link_rel: str, raw_target: str) -> str | None:
    """Where the link ``link_rel`` (reading ``raw_target``) points, relative to ``root``; None if outside."""
    if posixpath.isabs(raw_target):
        resolved = posixpath.relpath(posixpath.normpath(raw_target), root.as_posix())
    else:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_rel), raw_target))
    return None if _escapes(resolved) else resolved


def plan_traced_copy(root: Path, entries: Iterable[str]) -> TracedCopy:
    """Decide how to recreate ``entries`` (paths relative to the tracing ``root``). Reads the build's
    links and file types; writes nothing. A path whose real location leaves the root is 'escaping'."""
    plan = TracedCopy()
    real_root = root.resolve()
    pending = sorted(set(entries), reverse=True)
    seen: set[str] = set()
    while pending:
        relative = pending.pop()
        if relative in seen:
            continue
        seen.add(relative)
        parts = relative.split("/")
        redirected = False
        # A link among the parents: recreate the link, and the file at its real place.
        for end in range(1, len(parts)):
            parent = "/".join(parts[:end])
            if os.path.islink(root / parent):
                target = link_target(root, parent, os.readlink(root / parent))
                if target is None:
                    plan.escaping.append(f"{parent} -> {os.readlink(root / parent)}")
                else:
                    plan.links[parent] = posixpath.relpath(target, posixpath.dirname(parent) or ".")
                    pending.append("/".join([target, *parts[end:]]))
                redirected = True
                break
        if redirected:
            continue
        path = root / relative
        if os.path.islink(path):
            raw = os.readlink(path)
            target = link_target(root, relative, raw)
            if target is None:
                plan.escaping.append(f"{relative} -> {raw}")
            else:
                plan.links[relative] = posixpath.relpath(target, posixpath.dirname(relative) or ".")
            continue
        if not path.exists():
            plan.missing.append(relative)
            continue
        if not path.resolve().is_relative_to(real_root):
            plan.escaping.append(relative)
            continue
        (plan.folders if path.is_dir() else plan.files).add(relative)
    return plan


def lacks_server_entries(traces: TraceSet) -> bool:
    """Whether the server trace misses what a standalone ``server.js`` loads (built without standalone)."""
    return not all(any(path.endswith(entry) for path in traces.files) for entry in STANDALONE_ONLY)


def server_entries_key(build: BuildOutput, lockfile: Path | None) -> str | None:
    """What the extra trace depends on: the lockfile (so node_modules), next's package, the app's place
    below the tracing root and this tracing code. None without a lockfile (then nothing is cached)."""
    try:
        parts = [lockfile.read_bytes() if lockfile else None,
                 (build.app_dir / "node_modules" / "next" / "package.json").read_bytes()]
    except OSError:
        return None
    if parts[0] is None:
        return None
    digest = hashlib.sha256()
    for part in (*parts, build.app_rel.encode(), _TRACE_SERVER_ENTRIES.encode()):
        digest.update(hashlib.sha256(part or b"").digest())
    return digest.hexdigest()[:24]


def _all_exist(trace_file: Path, build: BuildOutput) -> bool:
    try:
        trace = parse_trace(trace_file.read_text(encoding="utf-8"), build.next_dir.as_posix())
    except (OSError, ValueError):
        return False
    traced = merge_traces([trace], build.tracing_root.as_posix())
    return not traced.escaping and all(os.path.lexists(build.tracing_root / path) for path in traced.files)


def ensure_server_entries_trace(node: str, build: BuildOutput, cache_dir: Path, lockfile: Path | None) -> bool:
    """Put ``.next/nextdeploy-server.js.nft.json`` into the build: from ``cache_dir`` when an earlier build
    with the same dependencies traced it (and every file it names exists), else by tracing (then cached).
    Returns whether it came from the cache. Writes into the build and the cache dir only."""
    out = build.next_dir / EXTRA_SERVER_TRACE
    key = server_entries_key(build, lockfile)
    cached = cache_dir / f"server-entries-{key}.nft.json" if key else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, out)
        if _all_exist(out, build):
            return True
    trace_server_entries(node, build)
    if cached is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, cached)
    return False


def trace_server_entries(node: str, build: BuildOutput) -> None:
    """Write ``.next/nextdeploy-server.js.nft.json`` into the build (runs node with Next's own tracer).

    Raises ReleaseError when Next's tracer is unavailable or fails."""
    out = build.next_dir / EXTRA_SERVER_TRACE
    try:
        completed = subprocess.run(
            [node, "-e", _TRACE_SERVER_ENTRIES, str(build.tracing_root), str(out)], cwd=build.app_dir,
            capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        completed = subprocess.CompletedProcess([], 1, "", str(exc))
    if completed.returncode != 0 or not out.is_file():
        raise ReleaseError(
            "could not trace the files a standalone server.js needs (with Next.js's bundled @vercel/nft)",
            hint="set output: 'standalone' in next.config (traced mode then uses Next's own complete trace), "
                 "or use [release] mode = \"standalone\"",
            details=[f"  | {line}" for line in completed.stderr.strip().splitlines()[-10:]],
        )


def server_js_source(next_config: dict[str, Any]) -> str:
    """A ``server.js`` equivalent to the one standalone output generates, for the given resolved config."""
    config = dict(next_config)
    dist_dir = str(config.get("distDir") or ".next")
    if not dist_dir.startswith(("./", "/")):
        config["distDir"] = f"./{dist_dir}"
    config_json = json.dumps(config, separators=(",", ":"), sort_keys=False)
    return f"""// Generated by nextdeploy for [release] mode = "traced": the equivalent of standalone's server.js.
const path = require('path')

const dir = path.join(__dirname)

process.env.NODE_ENV = 'production'
process.chdir(__dirname)

const currentPort = parseInt(process.env.PORT, 10) || 3000
const hostname = process.env.HOSTNAME || '0.0.0.0'

let keepAliveTimeout = parseInt(process.env.KEEP_ALIVE_TIMEOUT, 10)
const nextConfig = {config_json}

process.env.__NEXT_PRIVATE_STANDALONE_CONFIG = JSON.stringify(nextConfig)

require('next')
const {{ startServer }} = require('next/dist/server/lib/start-server')

if (Number.isNaN(keepAliveTimeout) || !Number.isFinite(keepAliveTimeout) || keepAliveTimeout < 0) {{
  keepAliveTimeout = undefined
}}

startServer({{
  dir,
  isDev: false,
  config: nextConfig,
  hostname,
  port: currentPort,
  allowRetry: false,
  keepAliveTimeout,
}}).catch((err) => {{
  console.error(err)
  process.exit(1)
}})
"""


def traced_release_ops(build: BuildOutput, traces: TraceSet, layout: ReleaseLayout, launcher: Path) -> list[Op]:
    """The ops that assemble a traced release. Raises ReleaseError (before anything is copied) when a
    traced path leaves the tracing root, or the build has no ``server.js``-worthy output."""
    reject_escaping(traces, build.tracing_root)
    copy = plan_traced_copy(build.tracing_root, traces.files | set(traces.symlinks))
    if copy.escaping:
        raise ReleaseError(
            f"{len(copy.escaping)} traced path(s) lead outside the tracing root {build.tracing_root} "
            "through a link; nothing of them was copied",
            hint="keep dependencies inside the workspace (no links to folders outside it), "
                 "or set outputFileTracingRoot to a folder that contains them",
            details=listing(copy.escaping),
        )
    next_prefix = f"{build.app_rel}/.next/" if build.app_rel else ".next/"
    tree_entries = sorted(entry.name for entry in build.next_dir.iterdir() if entry.name not in BUILD_ONLY
                          and not entry.name.endswith(".nft.json"))
    # Files inside a .next folder that is copied whole need no copy of their own.
    copied_whole = {f"{next_prefix}{name}" for name in tree_entries if (build.next_dir / name).is_dir()}

    def covered(relative: str) -> bool:
        return any(relative == top or relative.startswith(top + "/") for top in copied_whole)

    ops: list[Op] = [MakeDirs(layout.next_dir)]
    for name in tree_entries:
        source = build.next_dir / name
        ops.append(CopyTree(source, layout.next_dir / name) if source.is_dir() and not source.is_symlink()
                   else CopyFile(source, layout.next_dir / name))
    root = build.tracing_root
    for relative in sorted(copy.folders):
        if not covered(relative):
            ops.append(CopyTree(root / relative, layout.release_dir / relative))
    for relative in sorted(copy.files):
        if not covered(relative):
            ops.append(CopyFile(root / relative, layout.release_dir / relative))
    for relative, target in sorted(copy.links.items()):
        ops.extend([MakeDirs((layout.release_dir / relative).parent), Symlink(target, layout.release_dir / relative)])
    if (build.app_dir / "public").is_dir():
        ops.append(CopyTree(build.app_dir / "public", layout.public_dir))
    for name in ("package.json", *ENV_FILES):
        if (build.app_dir / name).is_file():
            ops.append(CopyFile(build.app_dir / name, layout.app_dir / name))
    ops.append(WriteFile(layout.server_js, server_js_source(build.next_config)))
    ops.append(CopyFile(launcher, layout.launcher_file))
    return ops
