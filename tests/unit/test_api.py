"""The public Python API (``nextdeploy.__all__``): load_config, deploy (dry run), status, rollback, errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nextdeploy
from support.idleapp import config_file as _config_file

PUBLIC = {
    "__version__", "load_config", "deploy", "rollback", "status", "Config", "DeployResult", "Status",
    "WorkerStatus", "ExitCode", "NextdeployError", "ConfigError", "ProjectError", "ToolMissingError",
    "HostPathError", "BuildError", "ReleaseError", "PreflightError", "ActivationError", "RollbackError",
    "LockError", "ReleaseNotFoundError", "Pm2Error", "PortError", "NameTakenError", "DiskFullError", "HookError",
    "SshError", "Interrupted",
}


def test_all_names_the_api_and_every_name_resolves() -> None:
    assert set(nextdeploy.__all__) == PUBLIC and len(nextdeploy.__all__) == len(PUBLIC)
    for name in nextdeploy.__all__:
        assert getattr(nextdeploy, name) is not None, name
    errors = [getattr(nextdeploy, name) for name in PUBLIC if name.endswith("Error")]
    assert all(issubclass(error, nextdeploy.NextdeployError) for error in errors)
    # One exit code per error type, as the CLI maps them (src/nextdeploy/errors.py).
    codes = [error.exit_code for error in errors if error is not nextdeploy.NextdeployError]
    assert len(set(codes)) == len(codes) and nextdeploy.ExitCode.UNEXPECTED not in codes
    assert nextdeploy.ConfigError.exit_code == nextdeploy.ExitCode.CONFIG == 3
    with pytest.raises(AttributeError):
        nextdeploy.no_such_name  # noqa: B018
    assert "deploy" in dir(nextdeploy)


def test_the_internal_deploy_module_does_not_replace_the_deploy_function() -> None:
    from nextdeploy.procedures.deploy import DeployResult  # loads the procedure, a module of another package

    assert callable(nextdeploy.deploy) and nextdeploy.deploy.__module__ == "nextdeploy.api"
    assert nextdeploy.DeployResult is DeployResult
    from nextdeploy import deploy

    assert deploy is nextdeploy.deploy


def test_importing_nextdeploy_loads_nothing_else() -> None:
    # The CLI starts through the package: its names are imported on first use.
    code = ("import sys, nextdeploy; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('nextdeploy', 'pydantic', 'click', 'rich', 'aiohttp')))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(completed.stdout.replace("'", '"')) == ["nextdeploy"]


def test_load_config_reads_a_file_and_raises_a_config_error_for_a_bad_one(tmp_path: Path) -> None:
    path, _ = _config_file(tmp_path)
    config = nextdeploy.load_config(path)
    assert isinstance(config, nextdeploy.Config) and config.app.name == "hello"
    assert config.root == tmp_path / "root"
    path.write_text('[app]\nname = "hello"\n')
    with pytest.raises(nextdeploy.ConfigError) as raised:
        nextdeploy.load_config(str(path))
    assert raised.value.exit_code == nextdeploy.ExitCode.CONFIG


def test_status_on_an_empty_root_changes_nothing_and_serializes(tmp_path: Path) -> None:
    path, pm2_ran = _config_file(tmp_path)
    progress = io.StringIO()
    result = nextdeploy.status(path, progress=progress)
    assert isinstance(result, nextdeploy.Status)
    assert result.current is None and result.workers == [] and result.lost_workers == []
    assert result.pm2_daemon_running is False and result.healthy is False and result.health_problem
    assert result.deploy_running is None and result.pm2_installed
    assert result.pm2_problem == f"PM2's daemon is not running (PM2_HOME={tmp_path / 'pm2home'})"
    data = json.loads(json.dumps(result.to_json()))
    assert data["app"] == "hello" and data["current"] is None and data["workers"] == []
    assert not pm2_ran.exists(), "status ran the pm2 command (that starts a daemon)"
    assert not (tmp_path / "root").exists() and not (tmp_path / "pm2home").exists()  # read only


def test_a_dry_run_deploy_prints_its_plan_and_changes_nothing(tmp_path: Path) -> None:
    path, pm2_ran = _config_file(tmp_path)
    progress = io.StringIO()
    assert nextdeploy.deploy(nextdeploy.load_config(path), dry_run=True, progress=progress) is None
    plan = progress.getvalue()
    assert plan.startswith("dry run: nothing will be changed; the new release would be ")
    assert "pnpm install --frozen-lockfile" in plan and "# preflight passes when /" in plan
    assert not pm2_ran.exists() and not (tmp_path / "root").exists()


def test_a_rollback_raises_the_error_type_and_exit_code_of_what_failed(tmp_path: Path) -> None:
    path, pm2_ran = _config_file(tmp_path)  # a pm2 that fails: its daemon cannot start
    with pytest.raises(nextdeploy.Pm2Error) as raised:
        nextdeploy.rollback(path, progress=io.StringIO())
    assert raised.value.exit_code == nextdeploy.ExitCode.PM2 == 14
    assert "pm2 could not start its daemon" in raised.value.message
    assert pm2_ran.exists() and not (tmp_path / "root" / "current").exists()
