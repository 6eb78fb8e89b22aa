"""The npm-style range matcher used for ``engines.node`` (nextdeploy.nextjs.semver)."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from nextdeploy.nextjs.semver import compare, parse_range, parse_version, satisfies

REPO = Path(__file__).resolve().parents[2]
NPM_SEMVER = REPO / ".tools" / "node_modules" / "semver"  # pm2's dependency: npm's own implementation

NEXT_ENGINES = "^18.18.0 || ^19.8.0 || >= 20.0.0"


@pytest.mark.parametrize(("version", "range_text", "expected"), [
    ("20.9.0", ">=20.9.0", True),
    ("20.8.9", ">=20.9.0", False),
    ("20.20.2", NEXT_ENGINES, True),
    ("19.8.0", NEXT_ENGINES, True),
    ("19.7.9", NEXT_ENGINES, False),
    ("18.18.0", NEXT_ENGINES, True),
    ("18.17.1", NEXT_ENGINES, False),
    ("v22.12.0", ">= 20.0.0", True),  # whitespace after the operator, v prefix on the version
    ("1.9.9", "^1.2.3", True), ("2.0.0", "^1.2.3", False), ("1.2.2", "^1.2.3", False),
    ("0.2.9", "^0.2.3", True), ("0.3.0", "^0.2.3", False),
    ("0.0.3", "^0.0.3", True), ("0.0.4", "^0.0.3", False),
    ("0.9.0", "^0.x", True), ("1.0.0", "^0.x", False),
    ("1.2.9", "~1.2.3", True), ("1.3.0", "~1.2.3", False), ("1.9.0", "~1", True), ("2.0.0", "~1", False),
    ("1.9.9", "1.x", True), ("2.0.0", "1.x", False), ("1.2.7", "1.2", True), ("1.3.0", "1.2", False),
    ("99.0.0", "*", True), ("99.0.0", "", True), ("0.0.0", "x", True),
    ("2.3.4", "1.2 - 2.3.4", True), ("2.3.5", "1.2 - 2.3.4", False), ("1.1.9", "1.2 - 2.3.4", False),
    ("2.3.9", "1.2.3 - 2.3", True), ("2.4.0", "1.2.3 - 2.3", False),
    ("1.9.9", "<=1", True), ("2.0.0", "<=1", False), ("2.0.0", ">1", True), ("1.9.9", ">1", False),
    ("1.3.0", ">1.2", True), ("1.2.9", ">1.2", False), ("1.1.9", "<1.2", True), ("1.2.0", "<1.2", False),
    ("21.0.0", ">=18 <22", True), ("22.0.0", ">=18 <22", False),
    ("1.2.3", "=1.2.3", True), ("1.2.4", "1.2.3", False),
    # npm's prerelease rule: only a set naming the same major.minor.patch with a prerelease admits one.
    ("21.0.0-rc.1", ">=20", False), ("20.1.0-rc.2", ">=20.1.0-rc.1", True), ("20.1.0-rc.0", ">=20.1.0-rc.1", False),
    ("2.0.0-alpha", "^1.2.3", False),
])
def test_satisfies(version: str, range_text: str, expected: bool) -> None:
    assert satisfies(version, range_text) is expected


def test_prerelease_precedence() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
    versions = [parse_version(text) for text in ordered]
    for left, right in itertools.pairwise(versions):
        assert compare(left, right) == -1 and compare(right, left) == 1
    assert compare(parse_version("1.0.0+build.5"), parse_version("1.0.0")) == 0


@pytest.mark.parametrize("bad", ["latest", ">=abc", "1.2.3.4", "^^1", "01.2.3"])
def test_unparsable_ranges_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_range(bad)


@pytest.mark.parametrize("bad", ["20", "20.1", "v20.x", "20.1.2.3", ""])
def test_versions_must_be_complete(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_version(bad)


# --- differential test against npm's semver ---------------------------------------------------------------


def random_cases(count: int, seed: int = 5) -> list[tuple[str, str]]:
    """Versions and ranges over a small alphabet, so that boundaries are hit often."""
    rng = random.Random(seed)
    part = lambda: str(rng.randint(0, 3))  # noqa: E731
    version = lambda: f"{part()}.{part()}.{part()}" + rng.choice(["", "", "-0", "-rc.1", "-alpha"])  # noqa: E731
    partial = lambda: rng.choice([version(), f"{part()}.{part()}", part(), f"{part()}.x", "*"])  # noqa: E731

    def comparator_set() -> str:
        if rng.random() < 0.2:
            return f"{partial()} - {partial()}"
        ops = ["", "=", "<", "<=", ">", ">=", "^", "~"]
        return " ".join(f"{rng.choice(ops)}{rng.choice(['', ' '])}{partial()}" for _ in range(rng.randint(1, 3)))

    return [(version(), " || ".join(comparator_set() for _ in range(rng.randint(1, 3)))) for _ in range(count)]


@pytest.mark.skipif(shutil.which("node") is None or not NPM_SEMVER.is_dir(), reason="needs node and npm's semver")
def test_agrees_with_npm_semver() -> None:
    cases = random_cases(3000)
    script = (f"const semver = require({json.dumps(str(NPM_SEMVER))});"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(cases.map(([v, r]) => semver.satisfies(v, r))));")
    answer = subprocess.run(["node", "-e", script], input=json.dumps(cases), capture_output=True, text=True,
                            check=True, timeout=60)
    expected = json.loads(answer.stdout)
    disagreements = [(v, r, want) for (v, r), want in zip(cases, expected, strict=True) if satisfies(v, r) != want]
    assert not disagreements, disagreements[:10]
