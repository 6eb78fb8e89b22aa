"""``npm install --prefix``: the one argv every npm install of a tool is made with (pm2, a package manager,
locally or on a fleet host).

npm with ``--prefix P`` also takes ``P`` as its global prefix, so it reads ``P/etc/npmrc`` as the global
npmrc instead of the machine's (its registry, proxy or CA settings): the machine's, as ``npm config get
globalconfig`` answers it without ``--prefix``, is passed back with ``--globalconfig``.
"""

from __future__ import annotations

GLOBALCONFIG_ARGV = ("config", "get", "globalconfig")  # after the npm binary: the machine's global npmrc


def npm_install_argv(npm: str, prefix: str, spec: str, globalconfig: str | None) -> tuple[str, ...]:
    """Install ``spec`` into ``prefix`` reading the machine's global npmrc ``globalconfig`` (what
    ``npm config get globalconfig`` said; None: npm could not say, and npm's own default stays)."""
    read_global = ("--globalconfig", globalconfig) if globalconfig else ()
    return (npm, "install", "--prefix", prefix, *read_global, "--no-audit", "--no-fund", spec)


def globalconfig_from(answer: str) -> str | None:
    """The global npmrc path out of ``npm config get globalconfig``'s output (None when it said nothing)."""
    lines = answer.strip().splitlines()
    return lines[-1].strip() if lines and lines[-1].strip() else None
