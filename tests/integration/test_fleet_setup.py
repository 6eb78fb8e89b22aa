"""`nextdeploy setup` against real test hosts (tests/support/hosts.py): real sshd, ssh, rsync, pip and npm.
The hosts are set up once for the module (pip and npm installs take time); each test then looks at what
a second run does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nextdeploy
from nextdeploy.core.errors import ExitCode
from nextdeploy.fleet.wheelhouse import code_digest
from support.hosts import Hosts, running_hosts, skip_without_host_tools

pytestmark = pytest.mark.integration

VERSION = nextdeploy.__version__
ROOT = "/srv/fleetapp"
PREFIX = f"{ROOT}/tools/nextdeploy-{VERSION}"
NEXTDEPLOY = Path(sys.executable).with_name("nextdeploy")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fleet:
    hosts: Hosts
    config: Path
    first: subprocess.CompletedProcess[str]
    first_took: float


def write_config(path: Path, hosts: Hosts, root: str = ROOT) -> Path:
    entries = "".join(f'[[hosts]]\nssh = "{name}"\n\n' for name in hosts.names)
    path.write_text(
        f'[app]\nname = "fleetapp"\nsource = "{REPO / "examples" / "hello"}"\n\n'
        f'[server]\nroot = "{root}"\n\n{entries}'
        f'[ssh]\nconfig = "{hosts.ssh_config}"\n\n[build]\ndir = "{path.parent / "build"}"\n'
    )
    return path


def setup(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([str(NEXTDEPLOY), "setup", "-c", str(config)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=900)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    skip_without_host_tools()
    base = tmp_path_factory.mktemp("fleet-setup")
    with running_hosts(base / "hosts", count=3) as hosts:
        config = write_config(base / "nextdeploy.toml", hosts)
        first, took = setup(config)
        print(f"first setup of 3 hosts: {took:.1f} s\n{first.stdout}{first.stderr}")
        yield Fleet(hosts, config, first, took)


def installed_mtime(hosts: Hosts, name: str) -> float:
    return hosts[name].path(f"{PREFIX}/.installed").stat().st_mtime


def test_setup_installs_the_same_version_and_pm2_on_every_host(fleet: Fleet) -> None:
    assert fleet.first.returncode == 0, fleet.first.stderr
    lines = fleet.first.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["web1", "web2", "web3"]
    assert all(f"nextdeploy {VERSION} installed in" in line and "pm2 yes" in line for line in lines), lines
    for name in fleet.hosts.names:
        answer = fleet.hosts.ssh(name, f"{PREFIX}/bin/nextdeploy host facts --root {ROOT}")
        facts = json.loads(answer.stdout)
        assert facts["nextdeploy"] == VERSION and facts["python"]["path"] == f"{PREFIX}/bin/python"
        assert facts["pm2"] == f"{ROOT}/tools/node_modules/.bin/pm2" and facts["root"]["marked"]
        host = fleet.hosts[name]
        assert host.path(f"{ROOT}/.nextdeploy-root").is_file()
        assert not Path(PREFIX).exists()  # on the hosts only, never the controller
    # Nothing system-wide on a host: its own pip and npm prefixes only.
    assert fleet.hosts.ssh("web1", "command -v nextdeploy pm2", check=False).stdout == ""


def test_a_second_setup_is_quick_and_reinstalls_nothing(fleet: Fleet) -> None:
    before = {name: installed_mtime(fleet.hosts, name) for name in fleet.hosts.names}
    done, took = setup(fleet.config)
    print(f"second setup: {took:.2f} s (first {fleet.first_took:.1f} s)")
    assert done.returncode == 0, done.stderr
    assert all("already set up" in line for line in done.stdout.splitlines()) and len(done.stdout.splitlines()) == 3
    assert {name: installed_mtime(fleet.hosts, name) for name in fleet.hosts.names} == before
    assert took < 10 and took < fleet.first_took / 3


def test_an_older_version_on_a_host_is_replaced(fleet: Fleet) -> None:
    web2 = fleet.hosts["web2"]
    old = f"{ROOT}/tools/nextdeploy-0.0.1"
    # web2 as an older nextdeploy left it: its venv of 0.0.1 (complete), none of this version.
    fleet.hosts.ssh("web2", f"rm -rf {PREFIX} && mkdir -p {old}/bin && touch {old}/.installed && "
                            f"printf '#!/bin/sh\\necho old\\n' > {old}/bin/nextdeploy && chmod +x {old}/bin/nextdeploy")
    untouched = {name: installed_mtime(fleet.hosts, name) for name in ("web1", "web3")}
    done, _ = setup(fleet.config)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["web2"].startswith(f"nextdeploy {VERSION} installed in")
    assert "already set up" in lines["web1"] and "already set up" in lines["web3"]
    assert not web2.path(old).exists()
    assert json.loads(fleet.hosts.ssh("web2", f"{PREFIX}/bin/nextdeploy host facts --root {ROOT}").stdout)[
        "nextdeploy"] == VERSION
    assert {name: installed_mtime(fleet.hosts, name) for name in ("web1", "web3")} == untouched


def test_the_same_version_with_other_code_on_a_host_is_replaced(fleet: Fleet) -> None:
    """web2 as another build of this very version left it (a dev build, a wheel re-released under the same
    version): its install mark names other code, and its code differs. Setup installs this code there."""
    web2 = fleet.hosts["web2"]
    package = next(web2.path(PREFIX).glob("lib/python*/site-packages/nextdeploy"))
    with (package / "__init__.py").open("a") as init:
        init.write("# another build of the same version\n")
    web2.path(f"{PREFIX}/.installed").write_text("0" * 64)
    untouched = {name: installed_mtime(fleet.hosts, name) for name in ("web1", "web3")}
    done, took = setup(fleet.config)
    print(f"setup replacing one host's other build: {took:.1f} s")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["web2"].startswith(f"nextdeploy {VERSION} installed in"), lines
    assert "already set up" in lines["web1"] and "already set up" in lines["web3"]
    assert web2.path(f"{PREFIX}/.installed").read_text() == code_digest()
    assert "another build" not in (package / "__init__.py").read_text()
    assert {name: installed_mtime(fleet.hosts, name) for name in ("web1", "web3")} == untouched


def test_an_unreachable_host_fails_the_setup_before_anything_changes(fleet: Fleet, tmp_path: Path) -> None:
    config = write_config(tmp_path / "nextdeploy.toml", fleet.hosts, root="/srv/other")
    fleet.hosts["web3"].stop_sshd()
    try:
        done, _ = setup(config)
    finally:
        fleet.hosts["web3"].start_sshd()
    assert done.returncode == ExitCode.SSH, done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: cannot reach web3 over SSH: connection refused")
    assert "(fix: " in error[0] and done.stdout == ""
    for name in fleet.hosts.names:
        assert not fleet.hosts[name].path("/srv/other").exists()


def test_a_missing_tool_or_a_foreign_root_fails_before_anything_changes(fleet: Fleet, tmp_path: Path) -> None:
    """rsync gone from web2 (/dev/null mounted over it, in web2's namespace only), then a root on web1 that
    holds someone's files: each is named with its fix, and no host gets the new root."""
    web2 = fleet.hosts["web2"]
    config = write_config(tmp_path / "nextdeploy.toml", fleet.hosts, root="/srv/other")
    in_web2 = web2.inside()
    subprocess.run([*in_web2, "mount", "--bind", "/dev/null", "/usr/bin/rsync"], check=True)
    try:
        done, _ = setup(config)
    finally:
        subprocess.run([*in_web2, "umount", "/usr/bin/rsync"], check=True)
    assert done.returncode == ExitCode.TOOL_MISSING, done.stderr
    assert done.stderr.splitlines() == ["error: web2 lacks rsync (fix: on web2: apt-get install rsync (or your "
                                        "system's package manager))"]
    fleet.hosts["web1"].path("/srv/other").mkdir()
    fleet.hosts["web1"].path("/srv/other/index.html").write_text("someone's site\n")
    done, _ = setup(config)
    assert done.returncode == ExitCode.HOST_PATH, done.stderr
    assert done.stderr.startswith("error: the root /srv/other on web1 is a non-empty directory nextdeploy did "
                                  "not create (it holds index.html)")
    assert sorted(p.name for p in fleet.hosts["web1"].path("/srv/other").iterdir()) == ["index.html"]
    assert not web2.path("/srv/other").exists() and not fleet.hosts["web3"].path("/srv/other").exists()


def test_an_installed_nextdeploy_ships_the_same_files_as_its_wheel(tmp_path: Path) -> None:
    """A controller that runs an installed nextdeploy (no checkout) rebuilds its wheel from the installed
    files: the same files as the wheel pip builds from the checkout (the example app and the launcher too)."""
    from importlib.metadata import Distribution

    from nextdeploy.fleet.wheelhouse import own_wheel, rebuild_wheel

    built = own_wheel(tmp_path / "built")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(tmp_path / "site"), str(built)], check=True, capture_output=True)
    installed = Distribution.at(tmp_path / "site" / f"nextdeploy-{VERSION}.dist-info")
    rebuilt = rebuild_wheel(installed, tmp_path / "rebuilt")

    def files(wheel: Path) -> dict[str, int]:
        import zipfile

        with zipfile.ZipFile(wheel) as archive:
            return {info.filename: info.CRC for info in archive.infolist() if not info.filename.endswith("/RECORD")}

    assert files(rebuilt) == files(built)
    assert "nextdeploy/launcher/launcher.cjs" in files(rebuilt)
    assert any(name.startswith("nextdeploy/_examples/hello/") for name in files(rebuilt))
