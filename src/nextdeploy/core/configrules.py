"""What a ``nextdeploy.toml`` value may be, and how a value that breaks a rule is reported.

The rules shared by the models in ``core/config.py``: limits of Linux paths and PM2's socket, URL paths,
environment tables, globs, the Server Actions key; and the one-line, key-path error for each failure, which
never echoes a secret.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

from nextdeploy.nextjs.traces import glob_regex
from nextdeploy.plans.ops import redact_url

# Keys whose values are never echoed back in an error: secrets, env tables (passwords, tokens), a command
# (it may carry a token).
SECRET_SECTIONS = ("security.", "server.env", "app.build_env", "app.build_command")

GIT_URL = re.compile(r"^(https?://|ssh://|git://|git@|file://)|\.git/?$")
# What the probes (Python's http.client, Node's http.request in the launcher) can send as a request
# target unchanged: printable ASCII without spaces. Anything else must be percent-encoded.
URL_PATH = r"^/[!-~]*$"
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Linux: NAME_MAX bytes per path component, PATH_MAX bytes per path (with its NUL).
NAME_MAX = 255
PATH_MAX = 4095
# The deploy root holds releases whose own paths (node_modules/.pnpm/...) run a few hundred bytes deeper.
ROOT_MAX = 1024
# PM2 listens on <PM2_HOME>/rpc.sock and pub.sock: a unix socket path holds at most 107 bytes. With a longer
# PM2_HOME the daemon starts, but no pm2 command can reach it (each hangs).
SOCKET_PATH_MAX = 107


def nul_in(value: Any) -> str | None:
    """Where a NUL is in ``value`` (a string, list or table; only names, never values, are said), or None."""
    if isinstance(value, str):
        return "the value" if "\0" in value else None
    if isinstance(value, list):
        return next((f"item [{index}]" for index, item in enumerate(value) if nul_in(item)), None)
    if isinstance(value, dict):
        for name, item in value.items():
            if "\0" in name:
                return "a name"
            if nul_in(item):
                return f"the value of {name}"
    return None


def env_names(value: dict[str, str]) -> dict[str, str]:
    """Environment variable names: no '=' (it ends the name), not empty. (NUL: ``config._Section``.)"""
    for name in value:
        if not name.strip():
            raise ValueError("an empty variable name; name it, e.g. API_URL")
        if "=" in name:
            # Only the part before '=': the rest may be a value written into the name by mistake.
            raise ValueError(f"the name {name.split('=')[0]!r}=... contains '=', which no environment variable "
                             "name can hold; write NAME = \"value\"")
    return value


def path_problem(value: str, what: str) -> str | None:
    """Why a path cannot be used on Linux (a component or the whole too long), or None."""
    raw = os.fsencode(value)
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return f"a component of {what} is longer than {NAME_MAX} bytes (the limit of a file name); use a shorter name"
    if len(raw) > PATH_MAX:
        return f"{what} is {len(raw)} bytes long, longer than a path can be ({PATH_MAX}); use a shorter path"
    return None


def resolved(value: str, info: ValidationInfo) -> Path:
    """``value`` made absolute against the config file's directory (``base_dir`` in the context)."""
    base = (info.context or {}).get("base_dir", Path("."))
    return Path(os.path.abspath(Path(base) / value))


def check_path(value: str, info: ValidationInfo, limit: int = PATH_MAX) -> str:
    problem = path_problem(value, "the path") or path_problem(str(resolved(value, info)), "the absolute path")
    if problem:
        raise ValueError(problem)
    length = len(os.fsencode(str(resolved(value, info))))
    if length > limit:
        raise ValueError(f"the absolute path is {length} bytes long; at most {limit} are supported here: "
                         "use a shorter path")
    return value


def url_path(value: str) -> str:
    if not re.match(URL_PATH, value):
        raise ValueError("must be a URL path: starting with '/', printable ASCII, no spaces (percent-encode "
                         "anything else, e.g. %20 for a space)")
    return value


def relative(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("must be relative, without '..'")
    if not value.strip("/"):
        raise ValueError("is empty: it names nothing; remove it")
    return value


def file_name(value: str) -> str:
    # Linked at <app dir>/<value>: "." or "a//b" would name the app dir itself, or nothing.
    if any(part in ("", ".") for part in value.split("/")):
        raise ValueError("must name a file, like '.env.production' or 'config/local.json'")
    problem = path_problem(value, "the name")
    if problem:
        raise ValueError(problem)
    return value


def glob_pattern(value: str) -> str:
    try:
        glob_regex(value.strip("/"))
    except re.error as exc:
        raise ValueError(f"is not a valid glob ({exc}); check its [...] ranges") from None
    return value


UrlPath = Annotated[str, AfterValidator(url_path)]
EnvTable = Annotated[dict[str, str], AfterValidator(env_names)]
Glob = Annotated[str, AfterValidator(relative), AfterValidator(glob_pattern)]


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


def format_error(error: Any) -> str:
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


class Section(BaseModel):
    """A section of nextdeploy.toml (``core.config``'s and the fleet's, ``core.fleetconfig``)."""

    # Unknown keys are errors: a typo must never silently fall back to a default. Strict: `port = true`
    # or `port = "3000"` is an error, not port 1 or a guess; nan and inf are not numbers here.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No path, argv or environment can hold a NUL: it would fail at the build, not here.
        where = nul_in(value)
        if where is not None:
            raise ValueError(f"{where} contains a NUL character (\\0), which no path, command, host or environment "
                             "variable can hold; remove it")
        return value
