"""The decisions of `nextdeploy setup` (fleet/setup.py) and of the wheelhouse it ships (fleet/wheelhouse.py)."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, cast

import pytest

from nextdeploy import __version__ as VERSION
from nextdeploy.cli.main import format_error, main
from nextdeploy.core.config import parse_config
from nextdeploy.core.errors import ExitCode, HostPathError, NextdeployError, ToolMissingError
from nextdeploy.fleet.facts import collect
from nextdeploy.fleet.setup import (
    NOT_INSTALLED,
    build_dir,
    check_ready,
    check_root,
    host_root,
    in_parallel,
    installed_argv,
    setup_fleet,
    ssh_settings,
    tools_prefix,
)
from nextdeploy.fleet.wheelhouse import (
    Target,
    code_digest,
    digest_of,
    pinned_dependencies,
    pip_platforms,
    rebuild_wheel,
    target_of,
)
from nextdeploy.remote.errors import HostUnreachableError
from nextdeploy.remote.ssh import SshTransport


def host(**changes: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": {"path": "/usr/bin/python3", "version": "3.11.2", "venv": True}, "node": {"version": "20.1.0"},
        "rsync": "/usr/bin/rsync", "npm": "/usr/bin/npm", "pm2": None, "arch": "x86_64",
        "libc": {"family": "glibc", "version": "2.36"},
        "root": {"path": "/srv/app", "entries": [], "marked": False, "release_log": False, "deletable": 0},
    }
    facts.update(changes)
    return facts


def test_a_ready_host_passes() -> None:
    check_ready("web1", host())
    check_ready("web1", host(npm=None, pm2="/srv/app/tools/node_modules/.bin/pm2"))  # npm only to get pm2


@pytest.mark.parametrize(("facts", "says", "fix"), [
    (host(python={"version": "3.9.2", "venv": True}), "web1 lacks Python >= 3.11 (it has 3.9.2)", "python3-venv"),
    (host(python={"version": "3.11.2", "venv": False}), "web1 lacks Python's venv module",
     "apt-get install python3-venv"),
    (host(rsync=None), "web1 lacks rsync", "apt-get install rsync"),
    (host(node=None, rsync=None), "web1 lacks node, rsync", "install Node.js >= 20.9"),
    (host(npm=None), "web1 lacks npm (to install pm2)", "npm install -g pm2@7"),
])
def test_a_missing_tool_is_named_with_its_fix(facts: dict[str, Any], says: str, fix: str) -> None:
    with pytest.raises(ToolMissingError) as raised:
        check_ready("web1", facts)
    [line] = format_error(raised.value)
    assert raised.value.exit_code == ExitCode.TOOL_MISSING and says in line and fix in line, line


def test_a_foreign_root_is_refused_and_an_own_one_accepted() -> None:
    check_root("web1", host())
    check_root("web1", host(root={"path": "/srv/app", "entries": ["releases", ".nextdeploy-root"], "marked": True,
                                  "release_log": False, "deletable": 3}))
    with pytest.raises(HostPathError) as raised:
        check_root("web2", host(root={"path": "/srv/app", "entries": ["index.html", "photos"], "marked": False,
                                      "release_log": False, "deletable": 0}))
    assert "the root /srv/app on web2 is a non-empty directory nextdeploy did not create" in raised.value.message


def test_every_failing_host_is_said_the_first_one_in_config_order() -> None:
    def work(name: str) -> str:
        if name in ("web2", "web3"):
            raise HostUnreachableError(name, f"cannot reach {name} over SSH: connection refused", hint="check it")
        return name.upper()

    assert in_parallel(["web1", "web4"], work) == {"web1": "WEB1", "web4": "WEB4"}
    with pytest.raises(NextdeployError) as raised:
        in_parallel(["web1", "web2", "web3"], work)
    assert raised.value.message == "cannot reach web2 over SSH: connection refused"
    assert raised.value.details == ["also: cannot reach web3 over SSH: connection refused"]
    assert raised.value.exit_code == ExitCode.SSH


def test_wheel_platforms_of_a_host() -> None:
    glibc = target_of(host())
    assert glibc == Target("3.11", "x86_64", "glibc", "2.36") and glibc.key == "py3.11-glibc2.36-x86_64"
    tags = pip_platforms(glibc)
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-4] == "manylinux_2_5_x86_64"
    assert tags[-3:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert pip_platforms(Target("3.12", "aarch64", "glibc", "2.12"))[-2:] == ["manylinux2010_aarch64",
                                                                             "manylinux1_aarch64"]
    assert pip_platforms(Target("3.12", "aarch64", "musl", "1.2")) == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64"]


def test_dependencies_are_pinned_to_what_runs_here() -> None:
    pins = pinned_dependencies()
    for name in ("click", "pydantic", "pydantic-core", "rich", "aiohttp", "node-semver"):
        assert pins[name] == metadata.version(name)
    assert "pytest" not in pins and "mypy" not in pins  # extras stay out


def test_the_code_digest_changes_with_any_shipped_file_or_pin_and_not_with_bytecode(tmp_path: Path) -> None:
    package = tmp_path / "nextdeploy"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "1.0.0"\n')
    (package / "cli" / "main.py").write_text("print('a')\n")
    pins = {"click": "8.1.7"}
    first = digest_of(package, pins)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (package / "cli" / "main.cpython-311.pyc").write_bytes(b"\1")
    assert digest_of(package, pins) == first  # bytecode is not shipped
    (package / "cli" / "main.py").write_text("print('b')\n")  # the same version, other code
    assert digest_of(package, pins) != first
    (package / "cli" / "main.py").write_text("print('a')\n")
    assert digest_of(package, pins) == first
    (package / "cli" / "main.py").rename(package / "cli" / "other.py")
    assert digest_of(package, pins) != first
    (package / "cli" / "other.py").rename(package / "cli" / "main.py")
    assert digest_of(package, {"click": "8.1.8"}) != first
    assert len(code_digest()) == 64 and code_digest() == code_digest()


def test_a_wheel_rebuilt_from_an_installed_distribution_installs(tmp_path: Path) -> None:
    """An installed nextdeploy (not a checkout) ships itself from the files its RECORD lists."""
    site = tmp_path / "site"
    (site / "tinypkg").mkdir(parents=True)
    (site / "tinypkg" / "__init__.py").write_text("VALUE = 42\n")
    (site / "tinypkg" / "__pycache__").mkdir()
    (site / "tinypkg" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"junk")
    info = site / "tinypkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.2\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("tinypkg/__init__.py,,\ntinypkg/__pycache__/__init__.cpython-311.pyc,,\n"
                                 "tinypkg-1.2.dist-info/METADATA,,\ntinypkg-1.2.dist-info/WHEEL,,\n"
                                 "tinypkg-1.2.dist-info/INSTALLER,,\ntinypkg-1.2.dist-info/RECORD,,\n"
                                 "../../bin/tiny,,\n")
    wheel = rebuild_wheel(metadata.Distribution.at(info), tmp_path)
    assert wheel.name == "tinypkg-1.2-py3-none-any.whl"
    assert sorted(zipfile.ZipFile(wheel).namelist()) == [
        "tinypkg-1.2.dist-info/METADATA", "tinypkg-1.2.dist-info/RECORD", "tinypkg-1.2.dist-info/WHEEL",
        "tinypkg/__init__.py"]
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    assert (target / "tinypkg" / "__init__.py").read_text() == "VALUE = 42\n"


def test_setup_without_hosts_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "x"\nsource = "app"\n\n[server]\nroot = "/srv/x"\n')
    with pytest.raises(SystemExit) as exited:
        main(["setup", "-c", str(config)])
    assert exited.value.code == ExitCode.CONFIG
    assert capsys.readouterr().err == ("error: the config lists no [[hosts]]: there is nothing to set up (fix: add "
                                       '[[hosts]] entries (ssh = "web1"), or deploy on this machine with '
                                       "`nextdeploy deploy`)\n")


def test_ssh_settings_and_build_dir_resolve_on_the_controller(tmp_path: Path) -> None:
    data = {"app": {"name": "hello", "source": "app"}, "server": {"root": "/srv/hello"}, "hosts": [{"ssh": "web1"}]}
    config = parse_config(data, tmp_path)
    assert ssh_settings(config).config_file is None and build_dir(config) == Path.home() / ".cache/nextdeploy/hello"
    config = parse_config({**data, "ssh": {"config": "ssh/config", "options": ["-o", "ProxyJump=b"]},
                           "build": {"dir": "cache"}}, tmp_path)
    assert ssh_settings(config).config_file == tmp_path / "ssh/config"
    assert ssh_settings(config).options == ("-o", "ProxyJump=b") and build_dir(config) == tmp_path / "cache"
    assert host_root(config, config.hosts[0]) == "/srv/hello"


def test_the_installed_nextdeploy_runs_only_when_it_is_this_version_and_code(tmp_path: Path) -> None:
    """``installed_argv``'s guard (run by sh on a host; here, by this machine's sh): the host's nextdeploy
    of this version runs with the arguments given only when its install mark names this code."""
    root = str(tmp_path)
    prefix = Path(tools_prefix(root, VERSION))
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "nextdeploy").write_text('#!/bin/sh\nprintf "ran:%s|" "$@"\n')
    (prefix / "bin" / "nextdeploy").chmod(0o755)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(installed_argv(root, "host", "lock", "--holder", "a b'c"), capture_output=True,
                              text=True, timeout=30, check=False)

    assert (run().returncode, run().stdout) == (NOT_INSTALLED, "")  # no mark: not installed (completely)
    (prefix / ".installed").write_text("0" * 64)
    assert (run().returncode, run().stdout) == (NOT_INSTALLED, "")  # another build of this version
    (prefix / ".installed").write_text(code_digest())
    assert (run().returncode, run().stdout) == (0, "ran:host|ran:lock|ran:--holder|ran:a b'c|")


def test_hosts_known_to_be_set_up_are_not_asked_again(tmp_path: Path) -> None:
    """A deploy's fleet lock answered the hosts' facts: setting up the fleet is then a check of those facts
    (the platform, one line per host), with no command on any host."""
    data = {"app": {"name": "hello", "source": "app"}, "server": {"root": "/srv/hello"},
            "hosts": [{"ssh": "web1"}, {"ssh": "web2"}], "build": {"dir": "cache"}}
    config = parse_config(data, tmp_path)
    here = collect(tmp_path / "root")

    class NoCommands:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"a command on a host: {args}")

    said: list[str] = []
    known = {name: {**here, "nextdeploy": VERSION, "pm2": "/usr/bin/pm2"} for name in ("web1", "web2")}
    done = setup_fleet(config, cast(SshTransport, NoCommands()), said.append, known=known)
    assert [(setup.name, setup.installed) for setup in done] == [("web1", False), ("web2", False)]
    assert [line.split(":")[0] for line in said] == ["web1", "web2"] and all("already set up" in line for line in said)
    other = {**known, "web2": {**known["web2"], "arch": "riscv64"}}  # another platform: refused as before
    with pytest.raises(NextdeployError, match="web2"):
        setup_fleet(config, cast(SshTransport, NoCommands()), said.append, known=other)
