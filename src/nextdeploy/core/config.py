"""``nextdeploy.toml``: the models, loading, and error reporting with key paths.

Relative paths in the file (``app.source``, ``server.root``, ``pm2.home``) are resolved against the
directory holding the file, so a config works from any working directory.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from nextdeploy.core.errors import ConfigError
from nextdeploy.core.fleetconfig import BuildConfig, HostConfig, RolloutConfig, SshConfig, check_build_host, check_hosts
from nextdeploy.nextjs.traces import glob_regex
from nextdeploy.plans.ops import redact_url

DEFAULT_CONFIG_NAME = "nextdeploy.toml"
# Keys whose values are never echoed back in an error: secrets, env tables (passwords, tokens), a command
# (it may carry a token).
SECRET_SECTIONS = ("security.", "server.env", "app.build_env", "app.build_command")
# A config larger than this is not a config (e.g. -c /dev/zero): refused before it is read whole.
MAX_CONFIG_BYTES = 1 << 20

_GIT_URL = re.compile(r"^(https?://|ssh://|git://|git@|file://)|\.git/?$")
# What the probes (Python's http.client, Node's http.request in the launcher) can send as a request
# target unchanged: printable ASCII without spaces. Anything else must be percent-encoded.
URL_PATH = r"^/[!-~]*$"
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Linux: NAME_MAX bytes per path component, PATH_MAX bytes per path (with its NUL).
NAME_MAX = 255
PATH_MAX = 4095
# The deploy root holds releases whose own paths (node_modules/.pnpm/...) run a few hundred bytes deeper.
ROOT_MAX = 1024
# PM2 listens on <PM2_HOME>/rpc.sock and pub.sock: a unix socket path holds at most 107 bytes. With a longer
# PM2_HOME the daemon starts, but no pm2 command can reach it (each hangs).
SOCKET_PATH_MAX = 107


class _Section(BaseModel):
    # Unknown keys are errors: a typo must never silently fall back to a default. Strict: `port = true`
    # or `port = "3000"` is an error, not port 1 or a guess; nan and inf are not numbers here.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No path, argv or environment can hold a NUL: it would fail at the build, not here.
        where = _nul_in(value)
        if where is not None:
            raise ValueError(f"{where} contains a NUL character (\\0), which no path, command or environment "
                             "variable can hold; remove it")
        return value


def _nul_in(value: Any) -> str | None:
    """Where a NUL is in ``value`` (a string, list or table; only names, never values, are said), or None."""
    if isinstance(value, str):
        return "the value" if "\0" in value else None
    if isinstance(value, list):
        return next((f"item [{index}]" for index, item in enumerate(value) if _nul_in(item)), None)
    if isinstance(value, dict):
        for name, item in value.items():
            if "\0" in name:
                return "a name"
            if _nul_in(item):
                return f"the value of {name}"
    return None


def _env_names(value: dict[str, str]) -> dict[str, str]:
    """Environment variable names: no '=' (it ends the name), not empty. (NUL: ``_no_nul``.)"""
    for name in value:
        if not name.strip():
            raise ValueError("an empty variable name; name it, e.g. API_URL")
        if "=" in name:
            # Only the part before '=': the rest may be a value written into the name by mistake.
            raise ValueError(f"the name {name.split('=')[0]!r}=... contains '=', which no environment variable "
                             "name can hold; write NAME = \"value\"")
    return value


def _path_problem(value: str, what: str) -> str | None:
    """Why a path cannot be used on Linux (a component or the whole too long), or None."""
    raw = os.fsencode(value)
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return f"a component of {what} is longer than {NAME_MAX} bytes (the limit of a file name); use a shorter name"
    if len(raw) > PATH_MAX:
        return f"{what} is {len(raw)} bytes long, longer than a path can be ({PATH_MAX}); use a shorter path"
    return None


def _resolved(value: str, info: ValidationInfo) -> Path:
    """``value`` made absolute against the config file's directory (``base_dir`` in the context)."""
    base = (info.context or {}).get("base_dir", Path("."))
    return Path(os.path.abspath(Path(base) / value))


def _check_path(value: str, info: ValidationInfo, limit: int = PATH_MAX) -> str:
    problem = _path_problem(value, "the path") or _path_problem(str(_resolved(value, info)), "the absolute path")
    if problem:
        raise ValueError(problem)
    length = len(os.fsencode(str(_resolved(value, info))))
    if length > limit:
        raise ValueError(f"the absolute path is {length} bytes long; at most {limit} are supported here: "
                         "use a shorter path")
    return value


def _url_path(value: str) -> str:
    if not re.match(URL_PATH, value):
        raise ValueError("must be a URL path: starting with '/', printable ASCII, no spaces (percent-encode "
                         "anything else, e.g. %20 for a space)")
    return value


def _relative(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("must be relative, without '..'")
    if not value.strip("/"):
        raise ValueError("is empty: it names nothing; remove it")
    return value


def _file_name(value: str) -> str:
    # Linked at <app dir>/<value>: "." or "a//b" would name the app dir itself, or nothing.
    if any(part in ("", ".") for part in value.split("/")):
        raise ValueError("must name a file, like '.env.production' or 'config/local.json'")
    problem = _path_problem(value, "the name")
    if problem:
        raise ValueError(problem)
    return value


def _glob(value: str) -> str:
    try:
        glob_regex(value.strip("/"))
    except re.error as exc:
        raise ValueError(f"is not a valid glob ({exc}); check its [...] ranges") from None
    return value


UrlPath = Annotated[str, AfterValidator(_url_path)]
EnvTable = Annotated[dict[str, str], AfterValidator(_env_names)]
Glob = Annotated[str, AfterValidator(_relative), AfterValidator(_glob)]


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
        problem = _path_problem(value, "the path")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("source")
    @classmethod
    def _source_path(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("is empty; set it to the app's directory or a git URL")
        if _GIT_URL.match(value):
            return value  # a URL, not a path here
        return _check_path(value, info)

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
        return self.ref is not None or bool(_GIT_URL.search(self.source))


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
        return _check_path(value, info, limit=ROOT_MAX)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.removesuffix(".").split(".")
        if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
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
        _check_path(value, info)
        socket = os.fsencode(str(_resolved(value, info) / "rpc.sock"))
        if len(socket) > SOCKET_PATH_MAX:
            raise ValueError(f"is too long for PM2: its socket {os.fsdecode(socket)!r} would be {len(socket)} bytes, "
                             f"and a unix socket path holds at most {SOCKET_PATH_MAX}; use a shorter path")
        return value

    @field_validator("bin")
    @classmethod
    def _bin_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; remove the key to find pm2 on PATH")
        return value if value is None else _check_path(value, info)


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
    shared_files: list[Annotated[str, AfterValidator(_relative), AfterValidator(_file_name)]] = Field(
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
        if _GIT_URL.match(self.app.source):
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
        return check_build_host(value, info.data.get("hosts", []))


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


# TOML's own words for the types a key needs (strict: `port = "3000"` or `port = true` is not a number).
_TYPE_MESSAGES = {
    "int_type": "must be a whole number, without quotes",
    "float_type": "must be a number, without quotes",
    "finite_number": "must be a finite number (not nan or inf)",
    "bool_type": "must be true or false, without quotes",
    "string_type": 'must be a string, in quotes: "..."',
    "literal_error": None,
    "dict_type": 'must be a table, like { NAME = "value" }',
    "list_type": 'must be a list, like ["..."]',
    "model_type": "must be a table: a [section] with its keys",
}
_ECHO_MAX = 80


def _format_error(error: Any) -> str:
    location = _format_location(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key (check the spelling; see the config reference in the README)"
    if kind == "missing":
        return f"{location}: required key is missing"
    message = _TYPE_MESSAGES.get(kind) or str(error["msg"]).removeprefix("Value error, ")
    if location.startswith(SECRET_SECTIONS) or kind == "model_type":
        # Never echo a secret back: nor a whole section of the wrong type ([[server]]), env tables and all.
        return f"{location}: {message}"
    got = redact_url(repr(error.get("input")))  # a git URL's credentials
    if len(got) > _ECHO_MAX:
        got = f"{got[:_ECHO_MAX]}... ({len(got)} characters)"
    return f"{location}: {message} (got {got})"


def parse_config(data: dict[str, Any], base_dir: Path, origin: str = DEFAULT_CONFIG_NAME) -> Config:
    """Validate parsed TOML, reporting every error at once with its key path."""
    try:
        config = Config.model_validate({**data, "base_dir": base_dir}, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = [_format_error(error) for error in exc.errors()]
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
