"""The CLI in-process: help everywhere, init, and expected failures as one line plus an exit code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nextdeploy import __version__
from nextdeploy.cli.main import cli, main
from nextdeploy.core.errors import ExitCode
from nextdeploy.core.releaselog import ReleaseLog

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("command", cli.list_commands(cli.make_context("nextdeploy", [], resilient_parsing=True)))
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "Usage:" in out
    if command not in ("init", "demo", "host"):  # these write or make their own config; host: a host has none
        assert "--config" in out


def test_every_host_subcommand_has_help_and_a_config_option(capsys: pytest.CaptureFixture[str]) -> None:
    host = cli.get_command(cli.make_context("nextdeploy", [], resilient_parsing=True), "host")
    for command in sorted(getattr(host, "commands", {})):
        code, out, _ = run(capsys, "host", command, "--help")
        assert code == 0 and "Usage:" in out, command
        # facts answers before the host has a config (nextdeploy setup asks it first), and lock is taken
        # before the controller sends its config (a refused controller changes nothing): they take --root.
        assert ("--root" if command in ("facts", "lock") else "--config") in out, command


def test_missing_config_is_one_line_with_a_fix(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "releases", "-c", str(tmp_path / "nope.toml"))
    assert code == ExitCode.CONFIG
    assert err.strip().count("\n") == 0 and err.startswith("error: no config file") and "(fix: " in err


def test_a_full_disk_anywhere_is_one_line_with_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk. Not a bug: no "unexpected", no traceback.
    code, _, err = run(capsys, "init", str(REPO / "examples" / "hello"), "-c", "/dev/full", "--force")
    assert code == ExitCode.DISK_FULL, err
    assert err.strip().splitlines()[-1] == ("error: the disk is full (fix: free space on that disk, then run the "
                                           "command again (`nextdeploy releases` shows what each release takes))")


def test_the_console_script_exits_with_the_code_and_every_line_said(tmp_path: Path) -> None:
    # It ends the process with os._exit (no interpreter tear-down): output must be flushed first.
    missing = subprocess.run([sys.executable, "-m", "nextdeploy", "releases", "-c", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == ExitCode.CONFIG and missing.stderr.startswith("error: no config file")
    listed = subprocess.run([sys.executable, "-m", "nextdeploy", "--help"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.rstrip().splitlines()[-1].split()[0] == "stop"  # to the end


def test_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "deploy", "--no-such-flag")
    assert code == ExitCode.USAGE and "no-such-flag" in err


def test_init_writes_a_valid_commented_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app, ignore=shutil.ignore_patterns("node_modules", ".next"))
    target = tmp_path / "nextdeploy.toml"
    code, out, _ = run(capsys, "init", str(app), "-c", str(target), "--root", "/srv/hello", "--port", "3100")
    assert code == 0, out
    assert "package manager: pnpm" in out and "output: 'standalone' is set" in out and "health route" in out
    config = tomllib.loads(target.read_text())
    assert config["app"] == {"name": "hello", "source": "hello", "path": ".", "package_manager": "pnpm"}
    assert config["server"]["port"] == 3100 and config["server"]["root"] == "/srv/hello"
    assert "# Reference" in target.read_text()
    # The home page found (app/page.jsx) is smoke-tested in the preflight and warmed up by new workers.
    assert config["health"]["smoke"] == ["/"] and "home page: app/page.jsx" in out
    # Never overwrites without --force.
    code, _, err = run(capsys, "init", str(app), "-c", str(target))
    assert code == ExitCode.CONFIG and "already exists" in err and "--force" in err
    assert run(capsys, "init", str(app), "-c", str(target), "--force")[0] == 0


def test_init_says_what_is_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = tmp_path / "bare"
    app.mkdir()
    (app / "package.json").write_text('{"name": "bare", "dependencies": {"next": "16.4.6"}}')
    (app / "next.config.mjs").write_text("export default {};\n")
    code, out, _ = run(capsys, "init", str(app), "-c", str(tmp_path / "n.toml"))
    assert code == 0
    assert 'add `output: "standalone",` to the config object in next.config.mjs' in out
    assert "export async function GET()" in out  # the health route to add
    assert "no lockfile" in out
    assert "smoke" not in tomllib.loads((tmp_path / "n.toml").read_text())["health"]  # no page serves "/"


def test_init_in_a_monorepo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mono = tmp_path / "mono"
    shutil.copytree(REPO / "tests" / "fixtures" / "monorepo", mono,
                    ignore=shutil.ignore_patterns("node_modules", ".next"))
    target = tmp_path / "nextdeploy.toml"
    code, out, _ = run(capsys, "init", str(mono / "apps" / "web"), "-c", str(target))
    assert code == 0 and "monorepo: workspace root" in out
    config = tomllib.loads(target.read_text())
    assert config["app"]["source"] == "mono" and config["app"]["path"] == "apps/web"


def test_releases_on_an_empty_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "x"\nsource = "app"\n[server]\nroot = "root"\n')
    code, out, _ = run(capsys, "releases", "-c", str(config), "--json")
    assert code == 0 and out.strip() == "[]"


@pytest.mark.parametrize("target", ["", "  "])
def test_an_empty_rollback_target_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   target: str) -> None:
    # `rollback --to "$ID"` with ID unset rolled back to the previous release, exit 0.
    code, _, err = run(capsys, "rollback", "--to", target, "-c", str(tmp_path / "nope.toml"))
    assert code == ExitCode.USAGE and "Invalid value for '--to': is empty" in err, err


@pytest.mark.parametrize("command", ["deploy", "rollback", "start", "stop"])
@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "1e999", "-1"])
def test_lock_timeouts_must_be_finite_and_not_negative(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       command: str, seconds: str) -> None:
    # `--lock-timeout nan` was accepted and waited forever (nan < 0 is false).
    code, _, err = run(capsys, command, "--lock-timeout", seconds, "-c", str(tmp_path / "nope.toml"))
    assert code == ExitCode.USAGE and "Invalid value for '--lock-timeout'" in err, err


@pytest.mark.parametrize("args", [("logs", "-n", "-1"), ("demo", "--rate", "nan")])
def test_other_numbers_out_of_range(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...]) -> None:
    # Before: the demo ran with a rate of nan (in tmp_path: --dir).
    code, _, err = run(capsys, *args, *(("--dir", str(tmp_path / "demo")) if args[0] == "demo" else ()))
    assert code == ExitCode.USAGE and "Invalid value for" in err, err


def test_dry_run_never_shows_env_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "x"\nsource = "app"\nbuild_env = { API_TOKEN = "build-secret-1" }\n'
                      '[server]\nroot = "root"\nenv = { DB_PASSWORD = "run-secret-2" }\n')
    for args in (("deploy", "--dry-run"), ("deploy", "--dry-run", "--json")):
        code, out, err = run(capsys, *args, "-c", str(config))
        assert code == 0, err
        assert "secret" not in out + err, out
        assert out.count("API_TOKEN=***") == 2 and out.count("DB_PASSWORD=***") == 1, out  # install, build; preflight
    assert not (tmp_path / "root").exists()


def test_releases_tells_the_live_release_from_earlier_good_ones(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    # Issue 20: the old and the live release were both listed as "active".
    config = tmp_path / "nextdeploy.toml"
    config.write_text('[app]\nname = "x"\nsource = "app"\n[server]\nroot = "root"\n')
    (tmp_path / "root" / "releases" / "r2").mkdir(parents=True)
    (tmp_path / "root" / "current").symlink_to("releases/r2")
    log = ReleaseLog(tmp_path / "root" / "releases.jsonl")
    for release in ("r1", "r2"):
        log.append("built", release)
        log.append("activated", release)
    log.append("built", "r3")
    code, out, _ = run(capsys, "releases", "-c", str(config))
    cells = [[cell.strip() for cell in line.split("\u2502")[1:-1]] for line in out.splitlines()
             if line.startswith("\u2502")]  # the table's rows: "│ * │ r2 │ live │ ..."
    assert code == 0 and "active" not in out, out
    assert [row[:3] for row in cells] == [["", "r1", "good"], ["*", "r2", "live"], ["", "r3", "ready"]], out
    code, out, _ = run(capsys, "releases", "-c", str(config), "--json")
    assert [(row["status"], row["current"]) for row in json.loads(out)] == [
        ("active", False), ("active", True), ("ready", False)]
