"""The fleet's part of ``nextdeploy.toml``: ``[[hosts]]``, ``[ssh]``, ``[rollout]`` and ``[build]``.

No ``[[hosts]]``: nextdeploy deploys on the machine it runs on, as it always did. With hosts, that machine
is the controller and every other section (``[server]``, ``[pm2]``, ...) applies on each host; a host's
``hostname`` and ``root`` override ``[server]``'s there. A leaf module (``core.config`` imports it), as
strict as the rest: unknown keys and wrong types are errors with the key path.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated

from pydantic import Field, field_validator

from nextdeploy.core.configrules import HOST_LABEL, ROOT_MAX, Section, path_problem

# An ssh destination: an alias of the ssh config, or [user@]host[:port] ([user@][v6addr][:port] for IPv6).
DESTINATION = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
DESTINATION_HINT = 'write an alias of your ssh config or [user@]host[:port], e.g. "deploy@10.0.0.11:22"'
BATCH_PERCENT = re.compile(r"^(100|[1-9][0-9]?)%$")


def destination_problem(text: str) -> str | None:
    """Why ``text`` is not an ssh destination, or None."""
    match = DESTINATION.fullmatch(text)
    if not match:
        return f"is not an ssh destination ({DESTINATION_HINT})"
    if match["port"] and not 1 <= int(match["port"]) <= 65535:
        return f"has port {match['port']}, not one of 1-65535"
    return None


_FleetSection = Section  # as every section of nextdeploy.toml


def _valid_destination(value: str) -> str:
    problem = destination_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _absolute_root(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path on the host, e.g. /srv/hello")
    problem = path_problem(value, "the path")
    if problem:
        raise ValueError(problem)
    if len(value.encode()) > ROOT_MAX:
        raise ValueError(f"is too long: at most {ROOT_MAX} bytes are supported here; use a shorter path")
    return value


class HostConfig(_FleetSection):
    """One ``[[hosts]]`` entry: where to reach it, and what differs there from ``[server]``."""

    ssh: str
    hostname: str | None = None  # this host's [server] hostname (the address its app listens on)
    root: str | None = None  # this host's [server] root

    @field_validator("ssh")
    @classmethod
    def _destination(cls, value: str) -> str:
        return _valid_destination(value)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if len(value) > 253 or not all(HOST_LABEL.match(label) for label in value.removesuffix(".").split(".")):
            raise ValueError("is neither an IP address nor a host name; use the address the host's app listens "
                             "on, e.g. 10.0.0.11 or 0.0.0.0 (every interface)")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_root(value)


class SshConfig(_FleetSection):
    """``[ssh]``: how the controller runs ssh (its own config file, extra options)."""

    config: str | None = None  # an ssh config file, passed as -F (~ and relative paths: on the controller)
    options: list[str] = Field(default_factory=list)  # extra ssh arguments, e.g. ["-o", "ProxyJump=bastion"]

    @field_validator("config")
    @classmethod
    def _config_file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; remove the key to use your own ~/.ssh/config")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for index, option in enumerate(value):
            if not option.strip() or "\n" in option:
                raise ValueError(f"item [{index}] is blank or spans lines; write ssh arguments like "
                                 '["-o", "ProxyJump=bastion"]')
        return value


class RolloutConfig(_FleetSection):
    """``[rollout]``: the canary hosts (the first in ``[[hosts]]``' order), then batches of the others."""

    canary: Annotated[int, Field(ge=0, le=1000)] = 1
    batch: int | str = 1  # hosts switched together after the canary: a number or a percentage ("50%")

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: int | str) -> int | str:
        if isinstance(value, bool) or (isinstance(value, int) and not 1 <= value <= 1000):
            raise ValueError('must be a number of hosts (1-1000) or a percentage of them, like "50%"')
        if isinstance(value, str) and not BATCH_PERCENT.match(value):
            raise ValueError('must be a number of hosts, without quotes, or a percentage from "1%" to "100%"')
        return value

    def batch_size(self, hosts: int) -> int:
        """Hosts per batch out of ``hosts``: a percentage rounds up, and a batch has at least one host."""
        if isinstance(self.batch, int):
            return self.batch
        return max(1, math.ceil(hosts * int(self.batch.rstrip("%")) / 100))


class BuildConfig(_FleetSection):
    """``[build]``: where the release is built (the controller, one of the hosts, or a build box) and cached."""

    dir: str | None = None  # the controller's builds, caches and git mirror (default ~/.cache/nextdeploy/<app>)
    host: str | None = None  # build there (one of the [[hosts]] by its ssh, or another ssh destination: a build box)
    root: str | None = None  # a build box's root (default [server] root); a [[hosts]] member builds in its own

    @field_validator("dir", "host")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; remove the key for the default")
        return value

    @field_validator("host")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        return None if value is None else _valid_destination(value)

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_root(value)


def check_hosts(hosts: list[HostConfig], server_root: str) -> list[HostConfig]:
    """Fleet-wide rules of ``[[hosts]]``: each host once, and a root that means something on the host."""
    seen: set[str] = set()
    for index, host in enumerate(hosts):
        if host.ssh in seen:
            raise ValueError(f"{host.ssh!r} (hosts[{index}].ssh) is listed twice; list each host once")
        seen.add(host.ssh)
        if host.root is None and not server_root.startswith("/"):
            raise ValueError(f"hosts[{index}] ({host.ssh}) has no root and [server] root {server_root!r} is "
                             "relative: on a host it must be absolute; set [server] root = \"/srv/<app>\" "
                             "or this host's root")
    return hosts


def check_build_host(build: BuildConfig, hosts: list[HostConfig], server_root: str = "/") -> BuildConfig:
    """``[build] root`` is a build box's: with no ``[build] host``, or one of the ``[[hosts]]`` (which builds in
    its own root), it would mean nothing. A build box without it uses ``[server] root``: absolute, then."""
    box = build.host is not None and build.host not in [host.ssh for host in hosts]
    if box and build.root is None and not server_root.startswith("/"):
        raise ValueError(f"host {build.host!r} (a build box: not one of the [[hosts]]) has no root and [server] root "
                         f"{server_root!r} is relative; set [build] root = \"/srv/<app>\" (absolute, on the build box)")
    if build.root is not None and (build.host is None or build.host in [host.ssh for host in hosts]):
        where = ("no [build] host" if build.host is None
                 else f"{build.host!r}, one of the [[hosts]], which builds in its own root")
        raise ValueError(f"root {build.root!r} is set for {where}; "
                         "remove [build] root (it is the root of a build box that is not one of the [[hosts]])")
    return build
