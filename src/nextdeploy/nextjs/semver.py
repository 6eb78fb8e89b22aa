"""A small npm-style semver range matcher, enough for ``engines.node`` (no dependency).

Supports ``||``, space-separated comparator sets, ``< <= > >= =``, ``^``, ``~``, x-ranges (``20``, ``20.x``,
``*``), hyphen ranges (``1.2 - 2.3.4``), whitespace after operators (``>= 20.0.0``) and npm's prerelease
rule: a prerelease version only matches a set with a comparator of the same ``major.minor.patch`` that
has a prerelease too. Build metadata (``+build``) is ignored, as npm does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"0|[1-9]\d*"
_PART = r"(?:0|[1-9]\d*|[xX*])"
_PARTIAL = re.compile(
    rf"^v?(?P<major>{_PART})(?:\.(?P<minor>{_PART})(?:\.(?P<patch>{_PART})"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?)?$"
)
_FULL = re.compile(
    rf"^v?(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_OPERATOR = re.compile(r"^(<=|>=|<|>|=|\^|~>?)?(.*)$")
_HYPHEN = re.compile(r"^(\S+)\s+-\s+(\S+)$")


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base + ("-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else "")

    @property
    def triple(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)


@dataclass(frozen=True)
class Comparator:
    operator: str  # one of < <= > >= =
    version: Version

    def test(self, version: Version) -> bool:
        order = compare(version, self.version)
        return {
            "<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0, "=": order == 0,
        }[self.operator]


def _prerelease(text: str | None) -> tuple[int | str, ...]:
    if not text:
        return ()
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def parse_version(text: str) -> Version:
    """``v20.9.0`` / ``20.9.0-rc.1`` -> Version; raises ValueError for anything else."""
    match = _FULL.match(text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]), _prerelease(match["pre"]))


def compare(left: Version, right: Version) -> int:
    """-1, 0 or 1 by semver precedence (a prerelease sorts before its release)."""
    if left.triple != right.triple:
        return -1 if left.triple < right.triple else 1
    if left.prerelease == right.prerelease:
        return 0
    if not left.prerelease:
        return 1
    if not right.prerelease:
        return -1
    for a, b in zip(left.prerelease, right.prerelease, strict=False):
        if a == b:
            continue
        if isinstance(a, int) and isinstance(b, int):
            return -1 if a < b else 1
        if isinstance(a, int):  # numeric identifiers sort before alphanumeric ones
            return -1
        if isinstance(b, int):
            return 1
        return -1 if a < b else 1
    return -1 if len(left.prerelease) < len(right.prerelease) else 1


@dataclass(frozen=True)
class _Partial:
    """A version with possibly missing or wildcard parts: ``1``, ``1.2``, ``1.x``, ``*``."""

    major: int | None
    minor: int | None
    patch: int | None
    prerelease: tuple[int | str, ...] = ()

    def floor(self) -> Version:
        return Version(self.major or 0, self.minor or 0, self.patch or 0, self.prerelease)


def _parse_partial(text: str) -> _Partial:
    match = _PARTIAL.match(text)
    if not match:
        raise ValueError(f"not a version or version range: {text!r}")

    def number(name: str) -> int | None:
        value = match[name]
        return None if value is None or value in ("x", "X", "*") else int(value)

    major, minor, patch = number("major"), number("minor"), number("patch")
    # A wildcard makes every later part a wildcard too (1.x.3 means 1.x).
    if major is None:
        minor = patch = None
    elif minor is None:
        patch = None
    return _Partial(major, minor, patch, _prerelease(match["pre"]) if patch is not None else ())


def _upper(bound: _Partial) -> Version:
    """The exclusive upper bound of an x-range (``1`` -> 2.0.0-0, ``1.2`` -> 1.3.0-0)."""
    assert bound.major is not None
    if bound.minor is None:
        return Version(bound.major + 1, 0, 0, (0,))
    return Version(bound.major, bound.minor + 1, 0, (0,))


_ANY: list[Comparator] = [Comparator(">=", Version(0, 0, 0))]
_NONE: list[Comparator] = [Comparator("<", Version(0, 0, 0, (0,)))]


def _desugar(operator: str, partial: _Partial) -> list[Comparator]:
    """One ``op version`` token as plain comparators."""
    full = partial.patch is not None
    if operator in ("", "="):
        if partial.major is None:
            return list(_ANY)
        if full:
            return [Comparator("=", partial.floor())]
        return [Comparator(">=", partial.floor()), Comparator("<", _upper(partial))]
    if operator in ("~", "~>"):
        if partial.major is None:
            return list(_ANY)
        ceiling = _upper(partial if partial.minor is None else _Partial(partial.major, partial.minor, None))
        return [Comparator(">=", partial.floor()), Comparator("<", ceiling)]
    if operator == "^":
        if partial.major is None:
            return list(_ANY)
        major, minor, patch = partial.major, partial.minor, partial.patch
        if major > 0 or minor is None:
            ceiling = Version(major + 1, 0, 0, (0,))
        elif minor > 0 or patch is None:
            ceiling = Version(0, minor + 1, 0, (0,))
        else:
            ceiling = Version(0, 0, patch + 1, (0,))
        return [Comparator(">=", partial.floor()), Comparator("<", ceiling)]
    if partial.major is None:
        return list(_ANY) if operator in (">=", "<=") else list(_NONE)
    if full:
        return [Comparator(operator, partial.floor())]
    if operator == ">":
        return [Comparator(">=", Version(*_upper(partial).triple))]  # >1.2 means >=1.3.0
    if operator == ">=":
        return [Comparator(">=", partial.floor())]
    if operator == "<":
        return [Comparator("<", Version(*partial.floor().triple, (0,)))]
    return [Comparator("<", _upper(partial))]  # "<="


def _parse_set(text: str) -> list[Comparator]:
    text = text.strip()
    hyphen = _HYPHEN.match(text)
    if hyphen:
        low, high = _parse_partial(hyphen[1]), _parse_partial(hyphen[2])
        bounds = [Comparator(">=", low.floor())] if low.major is not None else []
        if high.major is not None:
            bounds.append(Comparator("<=", high.floor()) if high.patch is not None else Comparator("<", _upper(high)))
        return bounds or list(_ANY)
    # npm allows whitespace between an operator and its version: ">= 20.0.0".
    text = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", text)
    comparators: list[Comparator] = []
    for token in text.split():
        match = _OPERATOR.match(token)
        assert match is not None  # the pattern matches any string
        comparators.extend(_desugar(match[1] or "", _parse_partial(match[2])))
    return comparators or list(_ANY)


def parse_range(text: str) -> list[list[Comparator]]:
    """A range as alternatives (``||``) of comparator sets; raises ValueError when it cannot be parsed."""
    return [_parse_set(alternative) for alternative in text.split("||")]


def _set_matches(comparators: list[Comparator], version: Version) -> bool:
    if not all(comparator.test(version) for comparator in comparators):
        return False
    if not version.prerelease:
        return True
    # npm: 21.0.0-rc.1 does not satisfy ">=20" just because it sorts above it.
    return any(c.version.prerelease and c.version.triple == version.triple for c in comparators)


def satisfies(version: str | Version, range_text: str) -> bool:
    """Whether ``version`` is in ``range_text`` (npm semantics). Raises ValueError on unparsable input."""
    parsed = version if isinstance(version, Version) else parse_version(version)
    return any(_set_matches(comparators, parsed) for comparators in parse_range(range_text))
