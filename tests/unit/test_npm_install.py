"""npm installs of tools (``plans.npm``): with ``--prefix``, npm would read ``<prefix>/etc/npmrc`` as the global
npmrc; every install passes the machine's own with ``--globalconfig``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextdeploy.core.errors import ToolMissingError
from nextdeploy.host.tools import install_npm_tool, npm_globalconfig
from nextdeploy.plans.npm import globalconfig_from, npm_install_argv

# A fake npm: answers `config get globalconfig` (unless told to fail) and records every call's argv and cwd;
# `install` creates the binary npm would.
FAKE_NPM = """#!/bin/sh
python3 - "$@" <<'PY'
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_NPM_CALLS"], "a") as calls:
    calls.write(json.dumps({"argv": args, "cwd": os.getcwd()}) + "\\n")
if args[:3] == ["config", "get", "globalconfig"]:
    if os.environ.get("FAKE_NPM_CONFIG_FAILS"):
        sys.exit(1)
    prefix = args[args.index("--prefix") + 1] if "--prefix" in args else "/opt/node"
    print(prefix + "/etc/npmrc")
elif args[0] == "install":
    bin_dir = os.path.join(args[args.index("--prefix") + 1], "node_modules", ".bin")
    os.makedirs(bin_dir, exist_ok=True)
    with open(os.path.join(bin_dir, "pm2"), "w") as binary:
        binary.write("")
PY
"""


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_NPM_CALLS", str(calls))
    monkeypatch.delenv("FAKE_NPM_CONFIG_FAILS", raising=False)
    return calls


def calls_of(calls: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_the_install_argv_passes_the_global_npmrc_back() -> None:
    assert npm_install_argv("/usr/bin/npm", "/srv/app/tools", "pm2@7", "/usr/etc/npmrc") == (
        "/usr/bin/npm", "install", "--prefix", "/srv/app/tools", "--globalconfig", "/usr/etc/npmrc",
        "--no-audit", "--no-fund", "pm2@7")
    assert npm_install_argv("npm", "/t", "pnpm@10", None) == (
        "npm", "install", "--prefix", "/t", "--no-audit", "--no-fund", "pnpm@10")
    assert globalconfig_from("/usr/etc/npmrc\n") == "/usr/etc/npmrc"
    assert globalconfig_from("npm warn something\n/etc/npmrc\n") == "/etc/npmrc"
    assert globalconfig_from("\n") is None


def test_install_npm_tool_reads_the_machines_global_npmrc_not_the_prefixs(fake_npm: Path, tmp_path: Path) -> None:
    tools = tmp_path / "srv" / "tools"
    assert install_npm_tool("pm2", tools) == str(tools / "node_modules" / ".bin" / "pm2")
    asked, installed = calls_of(fake_npm)
    assert asked == {"argv": ["config", "get", "globalconfig"], "cwd": "/"}  # no --prefix: the machine's
    assert installed["argv"] == ["install", "--prefix", str(tools), "--globalconfig", "/opt/node/etc/npmrc",
                                 "--no-audit", "--no-fund", "pm2@7"]


def test_an_npm_that_cannot_name_its_global_npmrc_installs_with_its_default(
        fake_npm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NPM_CONFIG_FAILS", "1")
    assert npm_globalconfig("npm") is None
    assert npm_globalconfig(str(tmp_path / "no-npm")) is None
    tools = tmp_path / "tools"
    install_npm_tool("pm2", tools)
    assert calls_of(fake_npm)[-1]["argv"] == ["install", "--prefix", str(tools), "--no-audit", "--no-fund", "pm2@7"]
    (tools / "node_modules" / ".bin" / "pm2").unlink()
    (tmp_path / "bin" / "npm").write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    with pytest.raises(ToolMissingError, match=r"could not install pm2 into .*: npm error 404 Not Found"):
        install_npm_tool("pm2", tools)
