"""``nextdeploy.toml``: the models and loading, with every error reported at once by key path.

Relative paths in the file (``app.source``, ``server.root``, ``pm2.home``) are resolved against the
directory holding the file, so a config works from any working directory. What each value may be, and how a
bad one is said, is in ``core/configrules.py``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, ValidationInfo, field_validator

from nextdeploy.core.configrules import (
    GIT_URL,
    HOST_LABEL,
    ROOT_MAX,
    SOCKET_PATH_MAX,
    EnvTable,
    Glob,
    Section,
    UrlPath,
    check_path,
    file_name,
    format_error,
    path_problem,
    relative,
    resolved,
)
from nextdeploy.core.configrules import (
    validate_server_actions_key as validate_server_actions_key,  # re-exported (release/secrets.py)
)
from nextdeploy.core.errors import ConfigError
from nextdeploy.core.fleetconfig import BuildConfig, HostConfig, RolloutConfig, SshConfig, check_build_host, check_hosts
from nextdeploy.core.paths import DEFAULT_CONFIG_NAME as DEFAULT_CONFIG_NAME  # re-exported (cli.init_cmd)

# A config larger than this is not a config (e.g. -c /dev/zero): refused before it is read whole.
MAX_CONFIG_BYTES = 1 << 20


_Section = Section


class AppConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    source: str
    path: str = "."
    ref: str | None = None
    package_manager: Literal["auto", "pnpm", "npm", "yarn"] = "auto"
    build_command: str | None = None
    build_env: EnvTable = Field(default_factory=dict)
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
        problem = path_problem(value, "the path")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("source")
    @classmethod
    def _source_path(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("is empty; set it to the app's directory or a git URL")
        if GIT_URL.match(value):
            return value  # a URL, not a path here
        return check_path(value, info)

    @field_validator("ref")
    @classmethod
    def _git_ref(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or any(c.isspace() or not c.isprintable()
                                                                            for c in value)):
            raise ValueError("is not a git branch, tag or commit (empty, starting with '-', or holding spaces or "
                             "control characters); set an existing one, or remove the key")
        return value

    @property
    def is_git(self) -> bool:
        """A git source: a URL, or any source with a ``ref`` to check out."""
        return self.ref is not None or bool(GIT_URL.search(self.source))


class ServerConfig(_Section):
    root: str
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    hostname: str = "127.0.0.1"
    instances: Annotated[int, Field(ge=1, le=64)] = 2
    env: EnvTable = Field(default_factory=dict)
    max_memory_restart: Annotated[str, Field(pattern=r"^[0-9]+[KMG]$")] = "768M"
    # PM2 waits this long for a new worker to say it is ready before giving up on it.
    listen_timeout: Annotated[int, Field(ge=1000, le=600_000)] = 15_000
    # PM2 SIGKILLs an old worker after this; the launcher drains for at most kill_timeout - 2 s.
    kill_timeout: Annotated[int, Field(ge=3000, le=600_000)] = 10_000
    # Workers replaced at the same time by a reload that only changes the release (each old worker
    # serves until its replacement is ready). 1 = one at a time, PM2's own way for <= 2 instances.
    reload_at_once: Annotated[int, Field(ge=1, le=64)] = 2

    @field_validator("root")
    @classmethod
    def _root_path(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("is empty; set the directory that will hold the releases, e.g. /srv/hello")
        return check_path(value, info, limit=ROOT_MAX)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.removesuffix(".").split(".")
        if len(value) > 253 or not all(HOST_LABEL.match(label) for label in labels):
            raise ValueError("is neither an IP address nor a host name (labels of 1-63 letters, digits or '-', "
                             "separated by single dots); use e.g. 127.0.0.1, 0.0.0.0 (every interface) or localhost")
        return value

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

    @field_validator("home")
    @classmethod
    def _home_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("is empty; remove the key to use PM2's own (~/.pm2)")
        check_path(value, info)
        socket = os.fsencode(str(resolved(value, info) / "rpc.sock"))
        if len(socket) > SOCKET_PATH_MAX:
            raise ValueError(f"is too long for PM2: its socket {os.fsdecode(socket)!r} would be {len(socket)} bytes, "
                             f"and a unix socket path holds at most {SOCKET_PATH_MAX}; use a shorter path")
        return value

    @field_validator("bin")
    @classmethod
    def _bin_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; remove the key to find pm2 on PATH")
        return value if value is None else check_path(value, info)


class HealthConfig(_Section):
    path: UrlPath = "/api/health"
    # A final answer: 1xx are interim (a client waits past them for the real one).
    expect_status: Annotated[int, Field(ge=200, le=599)] = 200
    expect_body: str | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 30
    request_timeout: Annotated[float, Field(gt=0, le=60)] = 5
    # A release must stay up and healthy this long after its first good answer (catches late crashes).
    stable_for: Annotated[float, Field(ge=0, le=120)] = 3
    smoke: list[UrlPath] = Field(default_factory=list)


class ReleaseConfig(_Section):
    """How a release is assembled."""

    mode: Literal["standalone", "traced"] = "standalone"
    # Files of <root>/shared/ linked into every release at the app's path, when present.
    shared_files: list[Annotated[str, AfterValidator(relative), AfterValidator(file_name)]] = Field(
        default_factory=lambda: [".env.production"])
    # Globs relative to the source root (forward slashes): files to add to / drop from every release.
    include: list[Glob] = Field(default_factory=list)
    exclude: list[Glob] = Field(default_factory=list)
    # .next/cache/images of every release links to <root>/shared/cache/images.
    share_image_cache: bool = True
    # When the app uses next/image with optimisation on and sharp does not load from the release.
    sharp_check: Literal["fail", "warn", "off"] = "fail"


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


class HooksConfig(_Section):
    """Shell commands run at points of a deploy (``plans/hooks.py``)."""

    before_activate: str | None = None
    after_activate: str | None = None
    on_failure: str | None = None
    # Seconds each hook may run; then it is killed with everything it started.
    timeout: Annotated[float, Field(gt=0, le=86_400)] = 600

    @field_validator("before_activate", "after_activate", "on_failure")
    @classmethod
    def _a_command(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("must be a shell command (not blank, no NUL); leave the key out for no hook")
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
    hooks: HooksConfig = Field(default_factory=HooksConfig)

    # Where the file lives: relative paths resolve against it. Not a TOML key.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @property
    def root(self) -> Path:
        """The deploy root on the host, absolute."""
        return (self.base_dir / self.server.root).resolve()

    @property
    def source(self) -> str:
        """The source as a path (absolute) or a git URL."""
        if GIT_URL.match(self.app.source):
            return self.app.source
        return str((self.base_dir / self.app.source).resolve())

    @property
    def pm2_home(self) -> Path | None:
        return (self.base_dir / self.pm2.home).resolve() if self.pm2.home else None

    # The fleet (core.fleetconfig): none of it set, nextdeploy deploys on this machine as it always did.
    hosts: list[HostConfig] = Field(default_factory=list)
    ssh: SshConfig = Field(default_factory=SshConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)

    @field_validator("hosts")
    @classmethod
    def _fleet_hosts(cls, value: list[HostConfig], info: ValidationInfo) -> list[HostConfig]:
        server = info.data.get("server")
        return check_hosts(value, server.root) if server is not None else value

    @field_validator("build")
    @classmethod
    def _fleet_build(cls, value: BuildConfig, info: ValidationInfo) -> BuildConfig:
        server = info.data.get("server")
        return check_build_host(value, info.data.get("hosts", []), server.root if server is not None else "/")

    def for_host(self, name: str) -> Config:
        """The config as host ``name`` (its ``[[hosts]]`` ``ssh``) applies it: that entry's hostname and root
        over ``[server]``'s, no fleet sections (on a host, nextdeploy deploys on that host). A ``[build] host``
        that is not one of them (a build box) gets ``[build] root``."""
        host = next((host for host in self.hosts if host.ssh == name), None)
        if host is None and name == self.build.host:  # a build box: its own root
            host = HostConfig.model_validate({"ssh": name, "root": self.build.root})
        if host is None:
            listed = ", ".join(host.ssh for host in self.hosts) or "none"
            raise ConfigError(f"no [[hosts]] entry has ssh = {name!r} (listed: {listed})",
                              hint="pass --as with the ssh value of this host's [[hosts]] entry")
        server = self.server.model_copy(update={key: value for key, value in
                                                (("hostname", host.hostname), ("root", host.root)) if value})
        return self.model_copy(update={"server": server, "hosts": [], "ssh": SshConfig(),
                                       "rollout": RolloutConfig(), "build": BuildConfig()})




def parse_config(data: dict[str, Any], base_dir: Path, origin: str = DEFAULT_CONFIG_NAME) -> Config:
    """Validate parsed TOML, reporting every error at once with its key path."""
    try:
        config = Config.model_validate({**data, "base_dir": base_dir}, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = [format_error(error) for error in exc.errors()]
        count = len(lines)
        raise ConfigError(
            f"{origin}: {count} invalid setting{'s' if count > 1 else ''}",
            hint="fix the keys listed above",
            details=lines,
        ) from None
    for key, resolve in (("[server] root", lambda: config.root), ("[app] source", lambda: config.source),
                         ("[pm2] home", lambda: config.pm2_home)):
        try:
            resolve()
        except RuntimeError as exc:  # Path.resolve: "Symlink loop from ..."
            raise ConfigError(f"{origin}: {key} cannot be resolved: {exc}",
                              hint=f"point {key} at a real directory (fix or remove the looping symlink)") from None
    if not config.app.is_git:
        source = Path(config.source)
        if config.root == source or source in config.root.parents:
            # A directory source is copied into <root>/builds/<id>: with the root inside, into itself, forever.
            raise ConfigError(f"{origin}: [server] root {config.root} is inside [app] source {source}",
                              hint="move [server] root out of the app's directory, e.g. next to it")
    return config


def load_config(path: Path) -> Config:
    """Read and validate a ``nextdeploy.toml``."""
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:  # e.g. a name longer than the filesystem allows
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}",
                          hint="pass -c path/to/nextdeploy.toml") from None
    if not exists:
        raise ConfigError(
            f"no config file at {path}",
            hint="run `nextdeploy init APP_DIR` to write one, or pass -c/--config FILE",
        )
    if is_dir:
        raise ConfigError(f"{path} is a directory, not a config file", hint="pass -c path/to/nextdeploy.toml")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MB: not a nextdeploy.toml",
                              hint="pass -c path/to/nextdeploy.toml")
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", hint="fix the TOML syntax at that line") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply",
                          hint="flatten the nesting (nextdeploy.toml needs at most 3 levels)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          hint="save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions") from None
    return parse_config(data, path.resolve().parent, origin=str(path))
