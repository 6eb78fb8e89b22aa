"""Does a release built in one place run on every host? A pure check of the hosts' facts (``fleet.facts``).

A Next.js release carries native modules built for one OS, CPU and C library (sharp installs
``@img/sharp-linux-x64`` on glibc x64) and is run by one Node ABI (its major): each must be the same
where the release is built and on every host. The libc's version and Node's minor may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nextdeploy.core.errors import PlatformError


@dataclass(frozen=True)
class Platform:
    """What a build must match: OS, CPU architecture, C library family and Node's major version."""

    os: str | None
    arch: str | None
    libc: str | None  # glibc or musl
    node_major: int | None

    def describe(self) -> str:
        node = f"Node {self.node_major}" if self.node_major is not None else "no Node"
        return f"{self.os or 'unknown OS'} {self.arch or 'unknown CPU'} ({self.libc or 'unknown libc'}), {node}"


def platform_of(facts: Mapping[str, Any]) -> Platform:
    """The platform in a machine's facts."""
    node = facts.get("node") or {}
    version = str(node.get("version") or "")
    major = version.split(".")[0]
    libc = facts.get("libc") or {}
    return Platform(facts.get("os"), facts.get("arch"), libc.get("family"), int(major) if major.isdigit() else None)


def mismatches(built: Platform, host: Platform) -> list[str]:
    """What differs between where the release is built and a host, in words ("CPU x86_64 here, aarch64 there")."""
    found = []
    for what, here, there in (("OS", built.os, host.os), ("CPU", built.arch, host.arch),
                              ("libc", built.libc, host.libc), ("Node major", built.node_major, host.node_major)):
        if here != there or here is None:
            found.append(f"{what}: {_shown(here)} where built, {_shown(there)} on the host")
    return found


def _shown(value: object) -> str:
    return "unknown" if value is None else str(value)


def check_platforms(builder: str, builder_facts: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse (``PlatformError``) when a host's platform differs from the builder's (``builder`` names it:
    "this machine" or the ``[build] host``). Every host that differs is named, the first in the message."""
    built = platform_of(builder_facts)
    wrong = {name: mismatches(built, platform_of(facts)) for name, facts in hosts.items() if name != builder}
    wrong = {name: found for name, found in wrong.items() if found}
    if not wrong:
        return
    first = next(iter(wrong))
    others = f" (and {', '.join(list(wrong)[1:])})" if len(wrong) > 1 else ""
    raise PlatformError(
        f"a release built on {builder} ({built.describe()}) would not run on {first}{others} "
        f"({platform_of(hosts[first]).describe()}): {'; '.join(wrong[first])}",
        hint=platform_hint(builder, first, list(hosts)),
        details=[f"{name}: {'; '.join(found)}" for name, found in wrong.items()] if len(wrong) > 1 else None,
    )


def platform_hint(builder: str, first: str, hosts: list[str]) -> str:
    """The fix of a platform mismatch: build where the hosts' platform is (a CI runner, or one of the hosts:
    ``[build] host``); when a ``[build] host`` already builds, the hosts differ among themselves."""
    if builder not in hosts:
        return (f"build on a machine or CI runner of {first}'s platform, or on a host of the fleet: "
                f'[build] host = "{first}" in nextdeploy.toml')
    return ("one release runs on one platform: give every host the same OS, CPU, libc and Node major, or set "
            "[build] host to a host of the platform all the others share")
