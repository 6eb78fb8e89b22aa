"""Where everything lives: pure path computations for the deploy root, a release and a build.

Nothing here touches the disk, so the same answers hold for a dry run and (later) a remote host.

    <root>/
      current -> releases/<id>     the live release (a symlink, switched atomically)
      releases/<id>/               immutable releases (a copy of .next/standalone plus assets)
      releases.jsonl               the append-only release log: the only source of ordering
      shared/                      env files and the Server Actions key, linked into every release
      builds/<id>/                 throwaway build dirs (never the user's working tree)
      cache/                       .next/cache between builds, the last build's node_modules, the git mirror,
                                   yarn 2+'s package cache
      logs/                        build, preflight and PM2 logs, outside the releases
      tools/                       what nextdeploy installed with npm: pm2, the package manager an app pins
                                   (tools/pnpm-8.15.6/, tools/yarn-3/), each version in its own prefix
      ecosystem.config.cjs         the generated PM2 ecosystem file
      .lock                        flock held while live state changes: a deploy's recovery and activation,
                                   a rollback, a stop
      .build.lock                  flock held by a deploy from start to end: one build at a time
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_CONFIG_NAME = "nextdeploy.toml"  # the config a command reads without -c (here: imported without pydantic)
UNFINISHED_MARKER = ".nextdeploy-unfinished"
META_DIR = ".nextdeploy"


@dataclass(frozen=True)
class DeployPaths:
    """Paths under one deploy root."""

    root: Path

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def log_file(self) -> Path:
        return self.root / "releases.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def build_lock_file(self) -> Path:
        return self.root / ".build.lock"

    @property
    def held_state_file(self) -> Path:
        """During a held cut-over's window: the release, the previous one, the old workers' PM2 ids."""
        return self.root / "held.json"

    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    @property
    def trash_dir(self) -> Path:
        """Releases removed by retention: renamed here at once, deleted during the next deploy's build."""
        return self.root / "trash"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def next_cache_dir(self) -> Path:
        return self.cache_dir / "next"

    @property
    def yarn_cache_dir(self) -> Path:
        """Yarn 2+'s global folder (its cache of package archives), kept between builds."""
        return self.cache_dir / "yarn-berry"

    @property
    def deps_cache_dir(self) -> Path:
        """The last successful build's node_modules, reused while the install inputs are unchanged."""
        return self.cache_dir / "deps"

    @property
    def git_mirror_dir(self) -> Path:
        return self.cache_dir / "git-mirror"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def ecosystem_file(self) -> Path:
        return self.root / "ecosystem.config.cjs"

    @property
    def ecosystem_applied_file(self) -> Path:
        """The sha256 of the ecosystem file PM2 last loaded successfully (see ``plans.pm2.in_place_reload_ids``)."""
        return self.root / "ecosystem.applied"

    @property
    def tools_dir(self) -> Path:
        return self.root / "tools"

    def release_dir(self, release_id: str) -> Path:
        return self.releases_dir / release_id

    def build_dir(self, release_id: str) -> Path:
        return self.builds_dir / release_id

    def build_log(self, release_id: str) -> Path:
        return self.logs_dir / f"build-{release_id}.log"

    def preflight_log(self, release_id: str) -> Path:
        return self.logs_dir / f"preflight-{release_id}.log"

    def pm2_out_log(self, app_name: str) -> Path:
        return self.logs_dir / f"pm2-{app_name}.out.log"

    def pm2_error_log(self, app_name: str) -> Path:
        return self.logs_dir / f"pm2-{app_name}.err.log"

    def pm2_raw_log(self, app_name: str) -> Path:
        """What PM2 itself still gets from the workers: only what bypasses the launcher's log files (a write
        straight to fd 1/2, e.g. a child process with inherited stdio); normally empty."""
        return self.logs_dir / f"pm2-{app_name}.raw.log"


@dataclass(frozen=True)
class ReleaseLayout:
    """Paths inside one release. ``app_rel`` is the app's path below the tracing root ('' if flat)."""

    release_dir: Path
    app_rel: str = ""

    @property
    def app_dir(self) -> Path:
        return self.release_dir / self.app_rel if self.app_rel else self.release_dir

    @property
    def server_js(self) -> Path:
        return self.app_dir / "server.js"

    @property
    def server_rel(self) -> str:
        """server.js relative to the release root, with forward slashes (the manifest's form)."""
        return str(PurePosixPath(self.app_rel) / "server.js") if self.app_rel else "server.js"

    @property
    def next_dir(self) -> Path:
        return self.app_dir / ".next"

    @property
    def static_dir(self) -> Path:
        return self.next_dir / "static"

    @property
    def public_dir(self) -> Path:
        return self.app_dir / "public"

    @property
    def meta_dir(self) -> Path:
        return self.release_dir / META_DIR

    @property
    def manifest_file(self) -> Path:
        return self.meta_dir / "manifest.json"

    @property
    def launcher_file(self) -> Path:
        return self.meta_dir / "launcher.cjs"

    @property
    def approved_file(self) -> Path:
        """Written once the release passed its preflight: its workers may take traffic (launcher.cjs)."""
        return self.meta_dir / "approved"

    @property
    def held_dir(self) -> Path:
        """``held/<pid>``: the private port of each worker waiting for the approval."""
        return self.meta_dir / "held"

    @property
    def unfinished_marker(self) -> Path:
        return self.release_dir / UNFINISHED_MARKER


@dataclass(frozen=True)
class SourceLayout:
    """Paths inside an exported source tree (a build dir). ``app_path`` is ``[app] path``."""

    source_root: Path
    app_path: str = "."

    @property
    def app_dir(self) -> Path:
        return (self.source_root / self.app_path) if self.app_path not in ("", ".") else self.source_root

    @property
    def next_dir(self) -> Path:
        return self.app_dir / ".next"

    @property
    def standalone_dir(self) -> Path:
        return self.next_dir / "standalone"

    @property
    def static_dir(self) -> Path:
        return self.next_dir / "static"

    @property
    def public_dir(self) -> Path:
        return self.app_dir / "public"

    @property
    def next_cache_dir(self) -> Path:
        return self.next_dir / "cache"

    @property
    def required_server_files(self) -> Path:
        return self.next_dir / "required-server-files.json"
