"""``nextdeploy.toml``: the models, loading, and error reporting with key paths.

Relative paths in the file (``app.source``, ``server.root``, ``pm2.home``) are resolved against the
directory holding the file, so a config works from any working directory.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nextdeploy.errors import ConfigError

DEFAULT_CONFIG_NAME = "nextdeploy.toml"
SECRET_SECTIONS = ("security.",)

_GIT_URL = re.compile(r"^(https?://|ssh://|git://|git@|file://)|\.git/?$")


class _Section(BaseModel):
    # Unknown keys are errors: a typo must never silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    source: str
    path: str = "."
    ref: str | None = None
    package_manager: Literal["auto", "pnpm", "npm", "yarn"] = "auto"
    build_command: str | None = None
    build_env: dict[str, str] = Field(default_factory=dict)
    # Niceness of install and build: a build on the serving host competes with the live app for CPU.
    # 0 runs them like any command; otherwise in a session of their own (see executor._lower_priority).
    build_nice: Annotated[int, Field(ge=0, le=19)] = 10
    # Seconds the install, and then the build, may each take: a hung `next build` (an open handle, a fetch
    # that never returns) would otherwise hold the deploy lock forever. Killed with all it started.
    build_timeout: Annotated[float, Field(gt=0, le=86_400)] = 1800
    # Skip the install when lockfile, package.json files, package-manager config, node, the package manager
    # and build_env are all unchanged since the last successful build: its node_modules are moved in.
    reuse_dependencies: bool = True

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError("must be a path inside the source, like 'apps/web'")
        return value

    @property
    def is_git(self) -> bool:
        """A git source: a URL, or any source with a ``ref`` to check out."""
        return self.ref is not None or bool(_GIT_URL.search(self.source))


class ServerConfig(_Section):
    root: str
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    hostname: str = "127.0.0.1"
    instances: Annotated[int, Field(ge=1, le=64)] = 2
    env: dict[str, str] = Field(default_factory=dict)
    max_memory_restart: Annotated[str, Field(pattern=r"^[0-9]+[KMG]$")] = "768M"
    # PM2 waits this long for a new worker to say it is ready before giving up on it.
    listen_timeout: Annotated[int, Field(ge=1000, le=600_000)] = 15_000
    # PM2 SIGKILLs an old worker after this; the launcher drains for at most kill_timeout - 2 s.
    kill_timeout: Annotated[int, Field(ge=3000, le=600_000)] = 10_000
    # Workers replaced at the same time by a reload that only changes the release (each old worker
    # serves until its replacement is ready). 1 = one at a time, PM2's own way for <= 2 instances.
    reload_at_once: Annotated[int, Field(ge=1, le=64)] = 2

    @field_validator("env")
    @classmethod
    def _no_controlled_names(cls, value: dict[str, str]) -> dict[str, str]:
        # nextdeploy sets these itself (plans.runtime); a value here would be silently overridden.
        taken = {"PORT": "[server] port", "HOSTNAME": "[server] hostname"}
        for name in value:
            if name in taken:
                raise ValueError(f"{name} is set by nextdeploy from {taken[name]}; set that key instead")
            if name == "NODE_ENV" and value[name] != "production":
                raise ValueError("NODE_ENV is always production for a Next.js server; use your own variable")
            if name.startswith("NEXTDEPLOY_"):
                raise ValueError(f"{name}: NEXTDEPLOY_* variables are nextdeploy's own")
        return value


class Pm2Config(_Section):
    home: str | None = None
    bin: str | None = None


class HealthConfig(_Section):
    path: Annotated[str, Field(pattern=r"^/")] = "/api/health"
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    expect_body: str | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 30
    request_timeout: Annotated[float, Field(gt=0, le=60)] = 5
    # A release must stay up and healthy this long after its first good answer (catches late crashes).
    stable_for: Annotated[float, Field(ge=0, le=120)] = 3
    smoke: list[Annotated[str, Field(pattern=r"^/")]] = Field(default_factory=list)


class ReleaseConfig(_Section):
    """How a release is assembled."""

    mode: Literal["standalone", "traced"] = "standalone"
    # Files of <root>/shared/ linked into every release at the app's path, when present.
    shared_files: list[str] = Field(default_factory=lambda: [".env.production"])
    # Globs relative to the source root (forward slashes): files to add to / drop from every release.
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    # .next/cache/images of every release links to <root>/shared/cache/images.
    share_image_cache: bool = True
    # When the app uses next/image with optimisation on and sharp does not load from the release.
    sharp_check: Literal["fail", "warn", "off"] = "fail"

    @field_validator("shared_files", "include", "exclude")
    @classmethod
    def _relative_paths(cls, values: list[str]) -> list[str]:
        for value in values:
            if value.startswith("/") or ".." in value.split("/"):
                raise ValueError(f"{value!r} must be relative, without '..'")
        return values


class ReleasesConfig(_Section):
    """Retention of past releases."""

    keep: Annotated[int, Field(ge=1, le=100)] = 5


class LogsConfig(_Section):
    # The app's logs in <root>/logs/ are rotated by size (K, M or G): a file is renamed to .1 (the older
    # ones shift up) once it reaches max_size; ``keep`` rotated files are kept per stream (out, err).
    max_size: Annotated[str, Field(pattern=r"^[1-9][0-9]*[KMG]$")] = "10M"
    keep: Annotated[int, Field(ge=1, le=100)] = 5

    @property
    def max_bytes(self) -> int:
        return size_bytes(self.max_size)


def size_bytes(text: str) -> int:
    """``10M`` -> 10485760 (K, M and G are powers of 1024)."""
    unit: int = 1024 ** ("KMG".index(text[-1]) + 1)
    return int(text[:-1]) * unit


class SkewConfig(_Section):
    # How many releases' /_next/static assets the live release keeps serving (None: all retained).
    keep_assets_of: Annotated[int, Field(ge=1, le=100)] | None = None


class SecurityConfig(_Section):
    server_actions_key: str | None = None

    @field_validator("server_actions_key")
    @classmethod
    def _valid_key(cls, value: str | None) -> str | None:
        if value is not None:
            validate_server_actions_key(value)
        return value


class Config(_Section):
    app: AppConfig
    server: ServerConfig
    pm2: Pm2Config = Field(default_factory=Pm2Config)
    health: HealthConfig = Field(default_factory=HealthConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    releases: ReleasesConfig = Field(default_factory=ReleasesConfig)
    skew: SkewConfig = Field(default_factory=SkewConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

    # Where the file lives: relative paths resolve against it. Not a TOML key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @property
    def root(self) -> Path:
        """The deploy root on the host, absolute."""
        return (self.base_dir / self.server.root).resolve()

    @property
    def source(self) -> str:
        """The source as a path (absolute) or a git URL."""
        if _GIT_URL.match(self.app.source):
            return self.app.source
        return str((self.base_dir / self.app.source).resolve())

    @property
    def pm2_home(self) -> Path | None:
        return (self.base_dir / self.pm2.home).resolve() if self.pm2.home else None


def validate_server_actions_key(value: str) -> None:
    """A Server Actions key is base64 of 16, 24 or 32 bytes (AES-128/192/256)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (generate one with: openssl rand -base64 32)") from None
    if len(raw) not in (16, 24, 32):
        raise ValueError(
            f"decodes to {len(raw)} bytes; it must be 16, 24 or 32 (generate one with: openssl rand -base64 32)"
        )


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts) or "(top level)"


def _format_error(error: Any) -> str:
    location = _format_location(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key (check the spelling; see the config reference in the README)"
    if kind == "missing":
        return f"{location}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if location.startswith(SECRET_SECTIONS):
        return f"{location}: {message}"  # never echo a secret back
    return f"{location}: {message} (got {error.get('input')!r})"


def parse_config(data: dict[str, Any], base_dir: Path, origin: str = DEFAULT_CONFIG_NAME) -> Config:
    """Validate parsed TOML, reporting every error at once with its key path."""
    try:
        config = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        lines = [_format_error(error) for error in exc.errors()]
        count = len(lines)
        raise ConfigError(
            f"{origin}: {count} invalid setting{'s' if count > 1 else ''}",
            hint="fix the keys listed above",
            details=lines,
        ) from None
    if not config.app.is_git:
        source = Path(config.source)
        if config.root == source or source in config.root.parents:
            # A directory source is copied into <root>/builds/<id>: with the root inside, into itself, forever.
            raise ConfigError(f"{origin}: [server] root {config.root} is inside [app] source {source}",
                              hint="move [server] root out of the app's directory, e.g. next to it")
    return config


def load_config(path: Path) -> Config:
    """Read and validate a ``nextdeploy.toml``."""
    if not path.exists():
        raise ConfigError(
            f"no config file at {path}",
            hint="run `nextdeploy init APP_DIR` to write one, or pass -c/--config FILE",
        )
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a config file", hint="pass -c path/to/nextdeploy.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", hint="fix the TOML syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="check the file's permissions") from None
    return parse_config(data, path.resolve().parent, origin=str(path))
