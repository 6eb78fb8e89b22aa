"""The controller's calls of `nextdeploy host ...`: the argv a host runs, its JSON answers, the config as a
host applies it (``Config.for_host``, ``--as``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nextdeploy
from nextdeploy.cli.main import cli
from nextdeploy.core.config import load_config
from nextdeploy.core.errors import ConfigError, ExitCode, HostFailedError, ToolMissingError
from nextdeploy.fleet.hostcall import answer_of, host_argv
from nextdeploy.remote.ssh import RemoteResult

FLEET = """
[app]
name = "shop"
source = "."

[server]
root = "/srv/shop"
hostname = "127.0.0.1"

[[hosts]]
ssh = "web1"
hostname = "10.0.0.11"

[[hosts]]
ssh = "deploy@web2:2222"
root = "/srv/other"

[rollout]
canary = 1
batch = "50%"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "nextdeploy.toml"
    path.write_text(FLEET)
    return path


def test_a_host_applies_its_own_hostname_and_root_and_no_fleet_sections(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    web1, web2 = config.for_host("web1"), config.for_host("deploy@web2:2222")
    assert (web1.server.hostname, web1.server.root) == ("10.0.0.11", "/srv/shop")
    assert (web2.server.hostname, web2.server.root) == ("127.0.0.1", "/srv/other")
    assert web1.hosts == [] and web2.hosts == [] and str(web1.rollout.batch) == "1"
    assert config.server.root == "/srv/shop" and len(config.hosts) == 2  # the fleet's own config unchanged
    with pytest.raises(ConfigError, match=r"no \[\[hosts\]\] entry has ssh = 'web3' \(listed: web1, deploy@web2"):
        config.for_host("web3")


def test_host_commands_on_a_fleet_config_need_to_know_which_host_they_run_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    for args, message in ((["host", "status", "-c", str(path)], "say which of them this host is"),
                          (["host", "status", "-c", str(path), "--as", "web9"], "no [[hosts]] entry")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args, standalone_mode=False)
        answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert exit_info.value.code == ExitCode.CONFIG == answer["error"]["code"]
        assert message in answer["error"]["message"]


def test_the_host_runs_its_own_nextdeploy_of_this_version_with_the_fleet_config() -> None:
    argv = host_argv("/srv/shop/", "web1", ["activate", "20260101-000000-abc"])
    assert argv == [f"/srv/shop/tools/nextdeploy-{nextdeploy.__version__}/bin/nextdeploy", "host", "activate",
                    "20260101-000000-abc", "-c", "/srv/shop/nextdeploy.toml", "--as", "web1"]


def _answer(stdout: str, code: int = 0, stderr: str = "") -> RemoteResult:
    return RemoteResult("web1", ("nextdeploy",), code, stdout.encode(), stderr.encode())


def test_answers_become_results_or_errors_naming_host_and_step() -> None:
    ok = json.dumps({"ok": True, "result": {"release": "r2"}, "steps": []})
    assert answer_of("web1", "activate", _answer("progress on stdout\n" + ok + "\n")) == {"release": "r2"}
    failed = json.dumps({"ok": False, "error": {"code": 9, "kind": "PreflightError", "message": "r2 exited",
                                                "hint": "read its log", "details": ["a line"]}})
    with pytest.raises(HostFailedError) as error:
        answer_of("web1", "activate", _answer(failed, code=9))
    assert error.value.exit_code == ExitCode.PREFLIGHT_FAILED
    assert (error.value.message, error.value.hint, error.value.details) == (
        "web1 failed at activate: r2 exited", "read its log", ["a line"])
    with pytest.raises(HostFailedError) as error:  # a code nextdeploy does not have is a bug (1), never 0
        answer_of("web1", "activate", _answer(json.dumps({"ok": False, "error": {"code": 0, "message": "?"}})))
    assert error.value.exit_code == ExitCode.UNEXPECTED
    with pytest.raises(ToolMissingError, match="web1 has no nextdeploy"):
        answer_of("web1", "status", _answer("", code=127, stderr="sh: 1: nextdeploy: not found"))
    with pytest.raises(HostFailedError, match="answered no JSON: Traceback line"):
        answer_of("web1", "status", _answer("not json", code=1, stderr="Traceback line"))
