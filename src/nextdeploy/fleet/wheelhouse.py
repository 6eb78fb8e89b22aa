"""How the controller ships itself: a dir of wheels (a wheelhouse) that installs on a host without PyPI.

The very nextdeploy that runs here becomes a wheel: built from the checkout it runs from (``pip wheel
--no-deps``), or rebuilt from the files of the installed distribution (its RECORD). Its dependencies are
pinned to the versions installed here (the whole closure, from ``importlib.metadata``) and downloaded
here, as binary wheels for the host's Python, CPU and libc (``pip download --platform``). The host then
installs with ``pip --no-index`` from that dir: it needs no access to PyPI, and gets exactly the versions
the controller runs. Wheelhouses are cached per platform in the controller's build dir.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nextdeploy
from nextdeploy.core.errors import ToolMissingError

NAME = "nextdeploy"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_NOT_SHIPPED = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
COMPLETE = "wheelhouse.json"  # written last: what the wheelhouse holds


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_dependencies(name: str = NAME) -> dict[str, str]:
    """Every distribution ``name`` needs, transitively, at the version installed here (extras left out;
    markers are not evaluated: a pin that the host's Python does not need is simply not used)."""
    pins: dict[str, str] = {}
    pending = [name]
    while pending:
        dist = metadata.distribution(pending.pop())
        for requirement in dist.requires or []:
            match = _REQUIREMENT_NAME.match(requirement)
            if not match or re.search(r"""\bextra\s*==""", requirement):
                continue
            needed = canonical(match[1])
            if needed in pins:
                continue
            try:
                pins[needed] = metadata.version(needed)
            except metadata.PackageNotFoundError:
                continue  # a marker keeps it out of this Python: none to pin
            pending.append(needed)
    return dict(sorted(pins.items()))


def direct_dependencies(name: str = NAME) -> list[str]:
    """The names ``name`` itself requires (not its extras)."""
    found = []
    for requirement in metadata.distribution(name).requires or []:
        match = _REQUIREMENT_NAME.match(requirement)
        if match and not re.search(r"""\bextra\s*==""", requirement):
            found.append(canonical(match[1]))
    return found


@dataclass(frozen=True)
class Target:
    """The platform a wheelhouse is for: from a host's facts."""

    python: str  # major.minor
    arch: str
    libc: str  # glibc or musl
    libc_version: str  # major.minor

    @property
    def key(self) -> str:
        return f"py{self.python}-{self.libc}{self.libc_version}-{self.arch}"


def target_of(facts: Mapping[str, Any]) -> Target:
    """The wheel platform of a host, from its facts (``fleet.facts``)."""
    python = ".".join(str(facts["python"]["version"]).split(".")[:2])
    libc = facts.get("libc") or {}
    version = ".".join(str(libc.get("version") or "").split(".")[:2])
    return Target(python, str(facts["arch"]), str(libc.get("family")), version)


def pip_platforms(target: Target) -> list[str]:
    """The ``pip --platform`` tags of wheels that run on ``target``: every manylinux (or musllinux) up to
    its libc's version, the legacy aliases among them."""
    major, _, minor_text = target.libc_version.partition(".")
    minor = int(minor_text) if minor_text.isdigit() else 0
    if target.libc == "musl":
        return [f"musllinux_{major}_{m}_{target.arch}" for m in range(minor, 0, -1)]
    tags = [f"manylinux_{major}_{m}_{target.arch}" for m in range(minor, 4, -1)]
    for alias, needs in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5)):
        if minor >= needs:
            tags.append(f"{alias}_{target.arch}")
    return tags


def download_argv(target: Target, pins: Mapping[str, str], direct: list[str], dest: Path,
                  constraints: Path) -> list[str]:
    """``pip download`` of the direct dependencies at their pins, the others constrained to theirs."""
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", target.python, "--dest", str(dest),
            "--constraint", str(constraints)]
    for tag in pip_platforms(target):
        argv += ["--platform", tag]
    return argv + [f"{name}=={pins[name]}" for name in direct if name in pins]


@functools.cache
def code_digest() -> str:
    """Which code this nextdeploy is, beyond its version (``digest_of`` its package and its dependencies'
    pins). ``fleet.setup`` records it in a host's install mark: a host with the same version but other code
    (a dev build, a wheel re-released under the same version, other dependencies) is installed again."""
    return digest_of(Path(nextdeploy.__file__).resolve().parent, pinned_dependencies())


def digest_of(package: Path, pins: Mapping[str, str]) -> str:
    """A sha256 of a package's files (path and bytes; bytecode left out: what its wheel ships) and of pins."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.relative_to(package).parts and path.suffix != ".pyc":
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(dict(pins), sort_keys=True).encode())
    return digest.hexdigest()


def checkout_dir() -> Path | None:
    """The source checkout this nextdeploy runs from (editable install or PYTHONPATH=src), or None."""
    source = Path(nextdeploy.__file__).resolve().parents[2]
    return source if (source / "pyproject.toml").is_file() and (source / "src" / NAME).is_dir() else None


def own_wheel(dest: Path) -> Path:
    """A wheel of the running nextdeploy in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    source = checkout_dir()
    if source is None:
        return rebuild_wheel(metadata.distribution(NAME), dest)
    built = Path(tempfile.mkdtemp(prefix="wheel-", dir=dest))
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                               "--disable-pip-version-check", "--wheel-dir", str(built), str(source)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        wheels = list(built.glob(f"{NAME}-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolMissingError(f"cannot build a wheel of nextdeploy from {source}: {said[0]}",
                                   hint="`pip wheel --no-deps .` must work in the checkout (it fetches hatchling)")
        return Path(shutil.move(str(wheels[0]), dest / wheels[0].name))
    finally:
        shutil.rmtree(built, ignore_errors=True)


def rebuild_wheel(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed pure-Python distribution, from the files its RECORD lists (no bytecode, no
    scripts: pip makes those on the host), with a RECORD of their new hashes."""
    version = dist.version
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{canonical(dist.metadata['Name']).replace('-', '_')}-{version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        info_dir = ""
        for file in dist.files or []:
            parts = file.parts
            if parts[0] == ".." or "__pycache__" in parts or file.suffix == ".pyc":
                continue  # console scripts (bin/), bytecode
            if parts[0].endswith(".dist-info"):
                info_dir = parts[0]
                if parts[-1] in _NOT_SHIPPED:
                    continue
            data = Path(str(dist.locate_file(file))).read_bytes()
            archive.writestr(file.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{file.as_posix()},sha256={digest},{len(data)}")
        if not info_dir:
            raise ToolMissingError(f"the installed {dist.metadata['Name']} {version} lists no files to ship",
                                   hint="reinstall nextdeploy with pip, or run it from a checkout")
        record.append(f"{info_dir}/RECORD,,")
        archive.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return wheel


def wheelhouse(cache: Path, target: Target) -> Path:
    """The dir of wheels that installs this nextdeploy on ``target``: made once per platform and version
    (downloads once; later set-ups reuse it), its own wheel rebuilt each time (a checkout changes)."""
    version = nextdeploy.__version__
    house = cache / f"{NAME}-{version}-{target.key}"
    pins = pinned_dependencies()
    complete = house / COMPLETE
    wanted = {"version": version, "target": target.key, "pins": pins}
    if not (complete.is_file() and json.loads(complete.read_text()) == wanted):
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        constraints = house / "constraints.txt"
        constraints.write_text("".join(f"{name}=={pin}\n" for name, pin in pins.items()))
        done = subprocess.run(download_argv(target, pins, direct_dependencies(), house, constraints),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = [line for line in (done.stderr or done.stdout).splitlines()
                    if line.strip() and not line.startswith("WARNING")][-1:] or ["no output"]
            raise ToolMissingError(
                f"cannot download nextdeploy's dependencies for {target.key} (Python {target.python}, "
                f"{target.libc} {target.libc_version}, {target.arch}): {said[0]}",
                hint="this machine must reach PyPI (or your index) once per host platform; check pip's index "
                     "settings and the network",
            )
        complete.write_text(json.dumps(wanted))
    for old in house.glob(f"{NAME}-*.whl"):
        old.unlink()
    own_wheel(house)
    return house
