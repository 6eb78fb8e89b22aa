"""`nextdeploy host ...` (the host boundary a fleet controller drives): one JSON object on stdout, the CLI's exit
codes, and which releases `host activate` accepts. The procedures themselves run on real PM2 in
tests/integration/test_host_boundary.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nextdeploy.cli.host_cmd import failure_document
from nextdeploy.cli.main import cli, main
from nextdeploy.cli.options import context_for
from nextdeploy.core.config import load_config
from nextdeploy.core.errors import (
    ExitCode,
    Interrupted,
    ReleaseError,
    ReleaseNotFoundError,
    RollbackError,
)
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.procedures.boundary import ActivateResult, _check_activatable
from nextdeploy.procedures.lifecycle import StartResult, StopResult
from support.idleapp import config_file as _config_file


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    with pytest.raises(SystemExit) as exited:
        main(["host", *args])
    out, err = capsys.readouterr()
    assert out.count("\n") == 1, f"not one JSON line on stdout: {out!r}"
    code = exited.value.code
    assert isinstance(code, int)
    return code, json.loads(out), err


def test_host_is_hidden_from_help_but_its_subcommands_exist() -> None:
    listed = cli.get_help(cli.make_context("nextdeploy", [], resilient_parsing=True)).split("Commands:")[1]
    assert "stop" in listed and "host" not in listed.split()
    ctx = cli.make_context("nextdeploy", [], resilient_parsing=True)
    for name in cli.list_commands(ctx):  # each visible command on its line, with the start of its help
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        summary = command.get_short_help_str(limit=20).rstrip(".")[:15]
        assert command.hidden or any(line.split()[:1] == [name] and summary in line for line in listed.splitlines())
    group = cli.get_command(cli.make_context("nextdeploy", [], resilient_parsing=True), "host")
    assert getattr(group, "hidden", False)
    assert {"status", "activate", "rollback", "start", "stop"} <= set(getattr(group, "commands", {}))


def test_host_status_prints_one_json_object_and_starts_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    config, pm2_ran = _config_file(tmp_path)
    code, document, _ = _run(capsys, "status", "-c", str(config))
    assert code == 0 and document["ok"] is True and document["steps"] == []
    assert document["result"]["app"] == "hello" and document["result"]["current"] is None
    assert not pm2_ran.exists()


@pytest.mark.parametrize("command", [["status"], ["activate", "20260101-000000-abcd"], ["rollback"], ["start"],
                                     ["stop"]])
def test_a_bad_config_is_a_json_error_with_the_config_exit_code(tmp_path: Path, command: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "hello"\n')
    code, document, err = _run(capsys, *command, "-c", str(config))
    assert code == ExitCode.CONFIG == 3
    assert document["ok"] is False and document["error"]["code"] == 3
    assert document["error"]["kind"] == "ConfigError" and document["error"]["message"]
    assert "lines" not in document["error"]
    assert err.strip().splitlines()[-1].startswith("error: ")  # for a person reading the controller's log


def test_an_empty_rollback_target_is_refused_not_taken_for_the_previous_release(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, pm2_ran = _config_file(tmp_path)
    code, document, _ = _run(capsys, "rollback", "--to", " ", "-c", str(config))
    assert code == ExitCode.ROLLBACK_FAILED and document["error"]["message"] == "--to is empty"
    assert not pm2_ran.exists() and not (tmp_path / "root").exists()  # refused before anything ran


def test_failure_documents_carry_the_cli_exit_codes() -> None:
    document, code = failure_document(RollbackError("there is no earlier good release", hint="see releases"))
    assert code == ExitCode.ROLLBACK_FAILED
    assert document["error"]["kind"] == "RollbackError" and document["error"]["hint"] == "see releases"
    assert document["error"]["lines"] == ["error: there is no earlier good release (fix: see releases)"]
    document, code = failure_document(Interrupted("SIGTERM", "interrupted by SIGTERM; nothing live changed"))
    assert code == ExitCode.INTERRUPTED == 130 and document["error"]["kind"] == "Interrupted"
    assert document["error"]["message"] == "interrupted by SIGTERM; nothing live changed"
    document, code = failure_document(ValueError("boom"))
    assert code == ExitCode.UNEXPECTED == 1 and document["error"]["kind"] == "ValueError"
    json.dumps(document)


def test_results_serialize() -> None:
    for result in (ActivateResult("b", "a", 1.23456, 0.5, ["x"], {"id": "b"}, already_live=False),
                   StartResult("a", True, 0.1), StopResult("a", 2, 0.2)):
        data = json.loads(json.dumps(result.to_json()))
        assert isinstance(data, dict)
    assert ActivateResult("b", "b", 0.0, 0.0, already_live=True).to_json()["already_live"] is True
    assert StopResult("a", 2, 0.2).to_json() == {"release": "a", "stopped_workers": 2, "seconds": 0.2}


def test_activate_accepts_only_a_complete_release_that_never_failed(tmp_path: Path) -> None:
    config, _ = _config_file(tmp_path)
    ctx = context_for(load_config(config), json_mode=True)
    ctx.paths.releases_dir.mkdir(parents=True)

    def release(release_id: str, complete: bool = True) -> None:
        layout = ReleaseLayout(ctx.paths.release_dir(release_id))
        layout.release_dir.mkdir()
        if complete:
            layout.meta_dir.mkdir()
            layout.manifest_file.write_text(json.dumps({"id": release_id, "revision": "abc"}))

    with pytest.raises(ReleaseNotFoundError):
        _check_activatable(ctx, "20260101-000000-none")
    release("20260101-000000-half", complete=False)
    with pytest.raises(ReleaseError, match="incomplete"):
        _check_activatable(ctx, "20260101-000000-half")
    release("20260101-000000-bad")
    ctx.log.append("building", "20260101-000000-bad")
    ctx.log.append("built", "20260101-000000-bad")
    ctx.log.append("failed", "20260101-000000-bad", reason="preflight: it crashed")
    with pytest.raises(ReleaseError, match="preflight: it crashed"):
        _check_activatable(ctx, "20260101-000000-bad")
    release("20260101-000000-good")
    ctx.log.append("building", "20260101-000000-good")
    ctx.log.append("built", "20260101-000000-good")
    _check_activatable(ctx, "20260101-000000-good")
    # Copied here complete by another program: accepted, and the log learns of it (as built: ready).
    release("20260101-000000-copy")
    _check_activatable(ctx, "20260101-000000-copy")
    record = next(r for r in ctx.log.records() if r.id == "20260101-000000-copy")
    assert record.status.value == "ready" and record.revision == "abc"


# A procedure whose tools write to file descriptor 1 (as a child process inherits it), then answer.
NOISY = """
import os, sys
from pathlib import Path
from nextdeploy.cli.host_cmd import run_json
from nextdeploy.procedures.lifecycle import StopResult

def noisy(ctx):
    os.system("echo a tool talking on stdout")
    print("and a print")
    return StopResult("r1", 2, 0.5)

run_json(Path(sys.argv[1]), noisy)
"""


def test_stdout_carries_the_json_object_alone_whatever_a_tool_prints(tmp_path: Path) -> None:
    config, _ = _config_file(tmp_path)
    completed = subprocess.run([sys.executable, "-c", NOISY, str(config)], capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"ok": True, "result": {"release": "r1", "stopped_workers": 2,
                                                                   "seconds": 0.5}, "steps": []}
    assert "a tool talking on stdout" in completed.stderr and "and a print" in completed.stderr


# The console script's `run` in a fresh interpreter; as it ends, it says on stderr which of the modules that
# matter here it loaded (pydantic, the config's models, the command modules of cli/).
LOADED = """
import os, sys
from nextdeploy.cli import main as cli_main

real_exit = os._exit

def report(code):
    watched = ("nextdeploy.core.config", "nextdeploy.core.context", "nextdeploy.fleet.hostcall")
    loaded = sorted(name for name in sys.modules if name == "pydantic" or name in watched
                    or name.startswith("nextdeploy.cli.") and name.endswith("_cmd"))
    print("LOADED " + " ".join(loaded), file=sys.stderr, flush=True)
    real_exit(code)

os._exit = report  # run() ends the process with os._exit
sys.argv = ["nextdeploy", *sys.argv[1:]]
cli_main.run()
"""


def _loaded(tmp_path: Path, *args: str) -> list[str]:
    completed = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=60,
                               check=False, stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip()
    return completed.stderr.rsplit("LOADED", 1)[1].split()


def test_the_host_commands_without_a_config_load_no_config_models(tmp_path: Path) -> None:
    """`host facts` and `host lock` run over ssh before the host has a config, several times per host and
    deploy: each loads only its own command module (not pydantic, not the config's models), so it costs its
    host little CPU. A command that reads the config (host releases) does load them: the probe sees them."""
    config, _ = _config_file(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    assert _loaded(tmp_path, "host", "facts", "--root", str(root)) == ["nextdeploy.cli.host_cmd"]
    assert _loaded(tmp_path, "host", "lock", "--root", str(root), "--holder", "a test") == ["nextdeploy.cli.host_cmd"]
    read = _loaded(tmp_path, "host", "releases", "-c", str(config))  # the config's models, not the controller's
    assert {"pydantic", "nextdeploy.core.config"} <= set(read) and "nextdeploy.fleet.hostcall" not in read
    assert _loaded(tmp_path, "--version") == []  # no command runs: no command module loads


def test_host_lock_answers_the_hosts_facts_with_the_lock_when_asked(tmp_path: Path) -> None:
    """A deploy's set-up check rides on its lock: `host lock --facts` answers what `host facts` does."""
    root = tmp_path / "root"
    root.mkdir()
    argv = [sys.executable, "-m", "nextdeploy", "host", "lock", "--root", str(root), "--holder", "a test"]
    for facts in (False, True):
        completed = subprocess.run([*argv, *(["--facts"] if facts else [])], capture_output=True, text=True,
                                   timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout)["result"]
        assert result["holder"] == "a test" and result["path"] == str(root / ".fleet.lock")
        if facts:
            assert result["facts"]["root"]["path"] == str(root) and result["facts"]["python"]["version"]
            assert set(result["facts"]) == set(json.loads(subprocess.run(
                [sys.executable, "-m", "nextdeploy", "host", "facts", "--root", str(root)], capture_output=True,
                text=True, timeout=60, check=True).stdout))
        else:
            assert "facts" not in result
