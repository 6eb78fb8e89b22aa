"""Which package manager, in which version, installs an app: the one the app pins, else one that reads its
lockfile.

``packageManager`` in package.json (``pnpm@8.15.6``, ``yarn@3.6.4+sha512.<hex>``) names an exact version.
Without it the lockfile's format decides which majors can install from it: pnpm 10 refuses a v6 lockfile
(``ERR_PNPM_LOCKFILE_BREAKING_CHANGE``), pnpm 9 ignores a v5.4 one, yarn 4 rewrites a yarn 3 lockfile and
``--immutable`` then fails (``YN0028``), yarn 1 refuses a project that pins yarn 3. A pin the lockfile
cannot be installed with is refused before anything is built.

Pure: project.py reads the facts, tools.py finds or installs the binary, builder.py runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nextdeploy.core.errors import ProjectError
from nextdeploy.release.project import PackageManager

# pnpm lockfileVersion -> (oldest, newest) pnpm major that installs it frozen (None: no newer one known
# to refuse it), and the major nextdeploy installs for it. Measured: pnpm 9 installs a '6.0' lockfile,
# pnpm 10 and 12 refuse it; pnpm 8 refuses '5.4' and pnpm 9 takes it for absent.
PNPM_LOCKFILES: dict[str, tuple[int, int | None, int]] = {
    "5.3": (6, 7, 6),
    "5.4": (7, 7, 7),
    "6.0": (8, 9, 8),
    "6.1": (8, 9, 8),
    "9.0": (9, None, 10),
}
# yarn.lock's ``__metadata.version`` (berry only; yarn 1's lockfile has none) -> the same. Yarn 4
# rewrites a version 6 lockfile (yarn 3's), so an --immutable install fails.
YARN_BERRY_LOCKFILES: dict[str, tuple[int, int | None, int]] = {
    "4": (2, 3, 2),
    "5": (3, 3, 3),
    "6": (3, 3, 3),
    "7": (4, 4, 4),
    "8": (4, 4, 4),
}
YARN_CLASSIC = "1"  # what project.py reports for a yarn.lock without __metadata
DEFAULT_MAJOR: dict[str, int] = {"pnpm": 10, "yarn": 1}
# The npm package nextdeploy installs a manager from: yarn 2+ is published as @yarnpkg/cli-dist
# (the `yarn` package on npm is yarn 1).
YARN_BERRY_PACKAGE = "@yarnpkg/cli-dist"

_PIN = re.compile(r"^(?P<name>[a-z]+)@(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\+[0-9A-Za-z.]+)?$")


@dataclass(frozen=True)
class ManagerChoice:
    """The package manager to install with: an exact version, or a range of majors that read the lockfile."""

    name: PackageManager
    reason: str  # why this one: "package.json pins pnpm@8.15.6", "pnpm-lock.yaml is lockfileVersion '6.0'"
    exact: str | None = None  # the pinned version
    oldest: int | None = None  # the majors that read the lockfile (None: unbounded)
    newest: int | None = None
    default_major: int | None = None  # installed when nothing on the host fits (no pin)
    berry: bool = False  # yarn 2 or later
    notes: tuple[str, ...] = field(default=())  # warnings for the user

    def accepts(self, version: str | None) -> bool:
        """Whether a binary of this ``version`` (None: unknown) installs the lockfile as the app wants."""
        if self.exact is not None:
            return version == self.exact
        if self.oldest is None and self.newest is None:
            return True
        major = _major(version)
        if major is None:
            return False
        return (self.oldest is None or major >= self.oldest) and (self.newest is None or major <= self.newest)

    @property
    def install_version(self) -> str | None:
        """What nextdeploy installs with npm when no binary on the host fits: ``8.15.6`` or a major ``8``."""
        if self.exact is not None:
            return self.exact
        return str(self.default_major) if self.default_major is not None else None

    @property
    def npm_spec(self) -> str:
        """The npm package spec of ``install_version``: ``pnpm@8.15.6``, ``@yarnpkg/cli-dist@3``."""
        package = YARN_BERRY_PACKAGE if self.berry else self.name
        return f"{package}@{self.install_version}" if self.install_version else package

    @property
    def label(self) -> str:
        """``pnpm 8.15.6``, ``yarn 3`` (any 3.x), ``pnpm`` (any)."""
        return f"{self.name} {self.install_version}" if self.install_version else self.name

    @property
    def wanted(self) -> str:
        """What fits, in words: ``pnpm 8.15.6``, ``pnpm 8-9``, ``pnpm 9 or later``, ``yarn 3``."""
        if self.exact is not None or (self.oldest is None and self.newest is None):
            return self.label
        if self.newest is None:
            return f"{self.name} {self.oldest} or later"
        if self.oldest == self.newest:
            return f"{self.name} {self.oldest}"
        return f"{self.name} {self.oldest}-{self.newest}"

    def install_argv(self, tool: str) -> tuple[str, ...]:
        """Install exactly what the lockfile says; fail if it is out of date."""
        if self.name == "pnpm":
            return (tool, "install", "--frozen-lockfile")
        if self.name == "npm":
            return (tool, "ci", "--no-audit", "--no-fund")
        return (tool, "install", "--immutable") if self.berry else (tool, "install", "--frozen-lockfile")


def _major(version: str | None) -> int | None:
    match = re.match(r"^(\d+)\.", version or "")
    return int(match.group(1)) if match else None


def parse_pin(value: object) -> tuple[str, str] | None:
    """``pnpm@8.15.6+sha512.abc`` -> ("pnpm", "8.15.6"); None when it is not an exact pin (corepack's form)."""
    if not isinstance(value, str):
        return None
    match = _PIN.match(value.strip())
    return (match.group("name"), match.group("version")) if match else None


def choose_manager(name: PackageManager, lockfile: str, lockfile_format: str | None,
                   package_manager_field: object = None) -> ManagerChoice:
    """The package manager for a lockfile ``lockfile`` of ``name`` in format ``lockfile_format`` (pnpm's
    lockfileVersion, yarn.lock's __metadata version or "1", None if unknown), given the ``packageManager``
    field of package.json. Raises ProjectError when the pin cannot install this lockfile."""
    notes: list[str] = []
    pin = parse_pin(package_manager_field)
    if package_manager_field is not None and pin is None:
        notes.append(f"package.json's packageManager {package_manager_field!r} is not an exact version (corepack's "
                     f"form is {name}@<x.y.z>): {lockfile} decides")
    elif pin is not None and pin[0] != name:
        notes.append(f"package.json pins {pin[0]}@{pin[1]}, but the lockfile is {lockfile}: installing with {name}")
        pin = None
    if name == "npm":
        return ManagerChoice("npm", reason=f"{lockfile} is npm's", notes=tuple(notes))

    table = PNPM_LOCKFILES if name == "pnpm" else YARN_BERRY_LOCKFILES
    berry_lockfile = name == "yarn" and lockfile_format is not None and lockfile_format != YARN_CLASSIC
    if name == "yarn" and lockfile_format == YARN_CLASSIC:
        known: tuple[int, int | None, int] | None = (1, 1, 1)
    else:
        known = table.get(lockfile_format or "")
    if not lockfile_format:
        kind = ""
    elif name == "pnpm":
        kind = f"lockfileVersion '{lockfile_format}'"
    elif lockfile_format == YARN_CLASSIC:
        kind = "a yarn 1 lockfile"
    else:
        kind = f"a yarn 2+ lockfile, __metadata version {lockfile_format}"
    lockfile_words = f"{lockfile} ({kind})" if kind else lockfile
    reason = f"{lockfile} is {kind}" if kind else f"{lockfile} of an unknown format"

    if pin is not None:
        version = pin[1]
        major = _major(version)
        choice = ManagerChoice(name, reason=f"package.json pins {name}@{version}", exact=version,
                               berry=name == "yarn" and (major or 1) >= 2, notes=tuple(notes))
        if known is not None:
            by_lockfile = ManagerChoice(name, reason="", oldest=known[0], newest=known[1])
            if not by_lockfile.accepts(version):
                raise ProjectError(
                    f"package.json pins {name}@{version}, but {lockfile_words} can only be installed by "
                    f"{by_lockfile.wanted}",
                    hint=f"run `{name} install` with {name} {version} and commit {lockfile}, or pin the {name} "
                         f"that wrote it in package.json (\"packageManager\": \"{name}@<x.y.z>\")",
                )
        return choice

    if known is None:
        if name == "yarn" and berry_lockfile:
            # A berry lockfile of a format we do not know: a recent yarn.
            return ManagerChoice("yarn", reason=reason, oldest=2, default_major=4, berry=True, notes=tuple(notes))
        return ManagerChoice(name, reason=reason, default_major=DEFAULT_MAJOR[name], notes=tuple(notes))
    oldest, newest, default = known
    return ManagerChoice(name, reason=reason, oldest=oldest, newest=newest, default_major=default,
                         berry=name == "yarn" and default >= 2, notes=tuple(notes))


# Install failures that say the lockfile is unreadable by this version, or out of date. Checked in order.
_UNREADABLE = re.compile(
    r"ERR_PNPM_LOCKFILE_BREAKING_CHANGE|ERR_PNPM_FROZEN_LOCKFILE_WITH_OUTDATED_LOCKFILE|"
    r"ERR_PNPM_BROKEN_LOCKFILE.*incompatible|lockfileVersion of [\d.]+ is incompatible|ERR_PNPM_NO_LOCKFILE")
_OUT_OF_DATE = re.compile(
    r"ERR_PNPM_OUTDATED_LOCKFILE|Your lockfile needs to be updated|can only install packages when your "
    r"package\.json and package-lock\.json")
_YARN_REWRITE = re.compile(r"YN0028")


def install_failure(choice: ManagerChoice, version: str | None, lockfile: str,
                    log_lines: list[str]) -> tuple[str, str] | None:
    """What a failed frozen install says about the lockfile, as (what is wrong, how to fix it); None when the
    log shows another error (a registry, a script, a native build)."""
    text = "\n".join(log_lines)
    used = f"{choice.name} {version}" if version else choice.name
    command = f"`{choice.name} install`" if choice.name != "npm" else "`npm install`"
    code = re.search(r"ERR_PNPM_[A-Z_]+|YN0028", text)
    code_words = f" ({code.group(0)})" if code else ""
    if _UNREADABLE.search(text):
        return (f"{used} cannot read {lockfile}{code_words}; {choice.reason}",
                f"pin the {choice.name} that wrote the lockfile in package.json (\"packageManager\": "
                f"\"{choice.name}@<x.y.z>\"; nextdeploy installs it), or run {command} with {used} and commit "
                f"{lockfile}")
    if _YARN_REWRITE.search(text):
        return (f"{used} would have to rewrite {lockfile}{code_words}: it is out of date with package.json, or "
                f"was written by another yarn ({choice.reason})",
                f"run `yarn install` with {used} and commit {lockfile}, or pin the yarn that wrote it in "
                f"package.json (\"packageManager\": \"yarn@<x.y.z>\")")
    if _OUT_OF_DATE.search(text):
        return (f"{lockfile} is out of date with package.json{code_words}",
                f"run {command} (with {used}) and commit {lockfile}")
    return None

