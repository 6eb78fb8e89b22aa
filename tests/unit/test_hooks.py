"""Release hooks: what runs (plans/hooks.py), the config keys, the executor's streamed output and timeout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from nextdeploy.core.config import Config, parse_config
from nextdeploy.core.context import Context
from nextdeploy.core.errors import ConfigError
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import DryRunExecutor, LocalExecutor
from nextdeploy.plans.hooks import hook_env, hook_op
from nextdeploy.procedures.dryrun import deploy_plan
from nextdeploy.procedures.hooks import run_hook
from support.processes import gone_soon


def _config(tmp_path: Path, **hooks: object) -> Config:
    data = {"app": {"name": "hello", "source": str(tmp_path / "app")},
            "server": {"root": str(tmp_path / "root"), "env": {"DATABASE_URL": "postgres://u:s3cret@db/x"}},
            "hooks": hooks}
    return parse_config(data, tmp_path)


def test_a_hook_gets_the_facts_and_the_runtime_env_but_not_the_server_actions_key(tmp_path: Path) -> None:
    config = _config(tmp_path, before_activate="true")
    env = hook_env(config, "on_failure", "R2", tmp_path / "root/releases/R2", "R1", "abc123",
                   error="boom", hosts=("web1", "web2"))
    assert env["NEXTDEPLOY_EVENT"] == "on_failure" and env["NEXTDEPLOY_APP"] == "hello"
    assert env["NEXTDEPLOY_RELEASE"] == "R2" and env["NEXTDEPLOY_PREVIOUS_RELEASE"] == "R1"
    assert env["NEXTDEPLOY_REVISION"] == "abc123" and env["NEXTDEPLOY_ERROR"] == "boom"
    assert env["NEXTDEPLOY_HOSTS"] == "web1 web2" and env["NODE_ENV"] == "production"
    assert env["DATABASE_URL"] == "postgres://u:s3cret@db/x"
    assert not any("SERVER_ACTIONS" in name for name in env)
    first = hook_env(config, "before_activate", "R1", tmp_path, None, None)
    assert first["NEXTDEPLOY_PREVIOUS_RELEASE"] == "" and "NEXTDEPLOY_ERROR" not in first


def test_a_printed_hook_masks_the_server_env(tmp_path: Path) -> None:
    config = _config(tmp_path, before_activate="npx prisma migrate deploy", timeout=30)
    env = hook_env(config, "before_activate", "R1", tmp_path, None, None)
    op = hook_op(config, "before_activate", "npx prisma migrate deploy", tmp_path, env,
                 tmp_path / "log")
    assert op.argv == ("/bin/sh", "-c", "npx prisma migrate deploy") and op.timeout == 30
    assert "s3cret" not in op.render() and "DATABASE_URL=***" in op.render()


@pytest.mark.parametrize("hooks", [{"before_activate": "  "}, {"on_failure": "a\0b"}, {"timeout": 0},
                                   {"after_activate": 3}, {"before_deploy": "x"}])
def test_bad_hook_settings_are_config_errors(tmp_path: Path, hooks: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(tmp_path, **hooks)
    assert any(line.startswith("hooks.") for line in raised.value.details)


def test_a_hooks_output_is_shown_with_a_prefix_and_kept_in_the_log(tmp_path: Path) -> None:
    config = _config(tmp_path, after_activate="x")
    shown: list[str] = []
    op = hook_op(config, "after_activate", "echo one; echo two >&2; exit 3", tmp_path, {},
                 tmp_path / "build.log")
    result = LocalExecutor(echo=shown.append).apply(op)
    assert result.returncode == 3
    assert sorted(shown) == ["[after_activate] one", "[after_activate] two"]
    log = (tmp_path / "build.log").read_text()
    assert "one\n" in log and "two\n" in log and log.startswith("$ ")


def test_a_failed_hook_that_does_not_stop_the_deploy_says_failed(tmp_path: Path) -> None:
    # Issue 20, item 7: an after_activate hook that failed printed "ok  hook after_activate" before its warning.
    (tmp_path / "root").mkdir()
    reporter = Reporter(force_plain=True)
    printed: list[str] = []
    reporter._line = printed.append  # type: ignore[method-assign]
    ctx = Context(_config(tmp_path, after_activate="exit 7"), LocalExecutor(echo=printed.append), reporter)
    assert run_hook(ctx, "after_activate", "R1", None, None) == "the after_activate hook failed (exit 7)"
    assert printed[-1].startswith("FAILED hook after_activate ("), printed


def test_a_hook_past_its_timeout_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    config = _config(tmp_path, after_activate="x", timeout=1)
    pid_file = tmp_path / "pid"
    # The background child keeps the output pipe open too: the wait must not hang on it.
    command = f"{sys.executable} -c 'import time; time.sleep(60)' & echo $! > {pid_file}; echo started; wait"
    op = hook_op(config, "after_activate", command, tmp_path, {}, tmp_path / "log")
    started = time.monotonic()
    result = LocalExecutor(echo=lambda line: None).apply(op)
    assert result.timed_out and result.returncode == 124
    assert time.monotonic() - started < 8
    assert gone_soon(int(pid_file.read_text()))


def test_a_dry_run_shows_the_hooks(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    config = _config(tmp_path, before_activate="pnpm prisma migrate deploy", after_activate="./notify.sh")
    lines: list[str] = []
    ctx = Context(config, DryRunExecutor(lines.append), Reporter(force_plain=True))
    steps = {step.title: step.ops for step in deploy_plan(ctx, "R1")}
    before, after = steps["hook before_activate"], steps["hook after_activate"]
    titles = list(steps)
    assert titles.index("hook before_activate") < titles.index("preflight on a private port")
    assert titles.index("hook after_activate") > titles.index("activate")
    assert "pnpm prisma migrate deploy" in before[0].render() and "./notify.sh" in after[0].render()
    assert "s3cret" not in before[0].render()
