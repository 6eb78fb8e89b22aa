"""npm version ranges, for ``engines.node``: node-semver (a port of npm's own ``semver`` package).

Strict parsing (``loose=False``), as npm reads ``engines``: ``||``, comparator sets, ``^ ~ x``, hyphen ranges,
whitespace after operators, and npm's prerelease rule (``21.0.0-rc.1`` is not in ``>=20``). Unparsable input
raises ValueError here, where ``nodesemver.satisfies`` would quietly answer False.
"""

from __future__ import annotations

import nodesemver
from nodesemver import Range
from nodesemver import SemVer as Version

__all__ = ["Version", "compare", "parse_range", "parse_version", "satisfies"]


def parse_version(text: str) -> Version:
    """``v20.9.0`` / ``20.9.0-rc.1`` -> Version; raises ValueError for anything else (``20``, ``20.x``)."""
    return nodesemver.make_semver(text.strip(), loose=False)


def compare(left: Version, right: Version) -> int:
    """-1, 0 or 1 by semver precedence (a prerelease sorts before its release; build metadata is ignored)."""
    return int(nodesemver.compare(left, right, loose=False))


def parse_range(text: str) -> Range:
    """A range; raises ValueError when it cannot be parsed."""
    return nodesemver.make_range(text, loose=False)


def satisfies(version: str | Version, range_text: str) -> bool:
    """Whether ``version`` is in ``range_text`` (npm semantics). Raises ValueError on unparsable input."""
    parsed = version if isinstance(version, Version) else parse_version(version)
    return bool(parse_range(range_text).test(parsed))
