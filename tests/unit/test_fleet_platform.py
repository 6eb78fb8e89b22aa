"""The platform check (fleet/platformcheck.py) and the host facts it reads (fleet/facts.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.cli.main import format_error
from nextdeploy.core.errors import ExitCode, PlatformError
from nextdeploy.fleet import facts as facts_module
from nextdeploy.fleet.facts import INSTALLED_MARK, collect
from nextdeploy.fleet.platformcheck import Platform, check_platforms, platform_of


def facts(os: str = "Linux", arch: str = "x86_64", libc: str | None = "glibc", libc_version: str = "2.36",
          node: str | None = "20.19.1") -> dict[str, Any]:
    return {"os": os, "arch": arch, "libc": {"family": libc, "version": libc_version},
            "node": {"path": "/usr/bin/node", "version": node} if node else None}


def test_platform_of_facts() -> None:
    assert platform_of(facts()) == Platform("Linux", "x86_64", "glibc", 20)
    assert platform_of(facts(node=None)).node_major is None
    assert platform_of({}) == Platform(None, None, None, None)


def test_same_platform_passes_even_with_other_libc_and_node_minors() -> None:
    check_platforms("this machine", facts(), {"web1": facts(libc_version="2.31", node="20.9.0"),
                                              "web2": facts(node="20.20.2")})


@pytest.mark.parametrize(("host", "says"), [
    (facts(arch="aarch64"), "CPU: x86_64 where built, aarch64 on the host"),
    (facts(os="Darwin", libc=None), "OS: Linux where built, Darwin on the host"),
    (facts(libc="musl", libc_version="1.2.4"), "libc: glibc where built, musl on the host"),
    (facts(node="22.1.0"), "Node major: 20 where built, 22 on the host"),
    (facts(node=None), "Node major: 20 where built, unknown on the host"),
])
def test_a_mismatch_is_refused_naming_the_host_and_the_fix(host: dict[str, Any], says: str) -> None:
    with pytest.raises(PlatformError) as raised:
        check_platforms("this machine", facts(), {"web1": facts(), "web2": host})
    error = raised.value
    assert error.exit_code == ExitCode.PLATFORM == 20
    [line] = format_error(error)
    assert says in line and "would not run on web2" in line, line
    assert line.endswith("(fix: build on a machine or CI runner of web2's platform, or on a host of the fleet: "
                         '[build] host = "web2" in nextdeploy.toml)')


def test_every_host_that_differs_is_listed_and_the_build_host_is_the_reference() -> None:
    hosts = {"web1": facts(arch="aarch64"), "web2": facts(), "web3": facts(node="18.0.0")}
    with pytest.raises(PlatformError) as raised:
        check_platforms("web1", hosts["web1"], hosts)
    assert "built on web1" in raised.value.message and "would not run on web2 (and web3)" in raised.value.message
    # The build host is one of them: the hosts differ among themselves, and no build place fits them all.
    assert raised.value.hint is not None and raised.value.hint.startswith("one release runs on one platform: give "
                                                                          "every host the same OS, CPU, libc")
    assert raised.value.details == ["web2: CPU: aarch64 where built, x86_64 on the host",
                                    "web3: CPU: aarch64 where built, x86_64 on the host; "
                                    "Node major: 20 where built, 18 on the host"]


def test_facts_of_this_machine_and_of_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    here = collect(root)
    assert here["os"] == "Linux" and here["python"]["version"].startswith("3.")
    assert here["root"] == {"path": str(root), "exists": False, "entries": [], "marked": False,
                            "release_log": False, "deletable": 0, "installed": []}
    assert here["disk_free"] > 0 and here["libc"]["family"] in ("glibc", "musl")
    (root / "tools" / "nextdeploy-0.1.0").mkdir(parents=True)
    (root / "tools" / "nextdeploy-0.0.9").mkdir(parents=True)  # an unfinished install: not listed
    (root / "tools" / "nextdeploy-0.1.0" / INSTALLED_MARK).write_text("")
    (root / "releases" / "r1").mkdir(parents=True)
    (root / ".nextdeploy-root").write_text("")
    (root / "releases.jsonl").write_text('{"event": "built", "release": "r1"}\n')
    seen = collect(root)["root"]
    assert seen["marked"] and seen["release_log"] and seen["deletable"] == 1 and seen["installed"] == ["0.1.0"]
    assert seen["entries"] == [".nextdeploy-root", "releases", "releases.jsonl", "tools"]


def test_facts_run_as_a_script_on_stdin_with_only_the_standard_library(tmp_path: Path) -> None:
    """As the controller sends it to a host before nextdeploy is there: ``python3 -I - ROOT`` < facts.py."""
    source = Path(facts_module.__file__).read_bytes()
    done = subprocess.run([sys.executable, "-I", "-S", "-", str(tmp_path)], input=source, capture_output=True,
                          cwd=tmp_path, check=True)
    said = json.loads(done.stdout)
    assert said["root"]["path"] == str(tmp_path) and said["nextdeploy"] is None  # -S: no site-packages
