"""docs/examples/deploy.yml, the documented GitHub Actions workflow: its essentials as read from the file, and
its shell steps run here as the runner runs them (bash -e, a script file), against a real ssh-agent and a
stand-in ``nextdeploy`` that only records how it was called."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.fleet import FLEET_COMMANDS
from support.nshost import keygen

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs/examples/deploy.yml"
# How the runner runs a step's script: by default, and with `shell: bash`.
SHELLS = {None: ["bash", "-e"], "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"]}


def workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return data


def steps() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"]["deploy"]["steps"]
    return found


def step(name: str) -> dict[str, Any]:
    return next(each for each in steps() if each.get("name") == name)


def run_step(name: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The step's script as the runner runs it: a file run by bash -e (-eo pipefail with shell: bash)."""
    script = tmp_path / f"step-{len(list(tmp_path.glob('step-*')))}.sh"
    script.write_text(step(name)["run"])
    shell = SHELLS[step(name).get("shell")]
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "RUNNER_TEMP": str(tmp_path / "runner"),
            "GITHUB_ENV": str(tmp_path / "github_env")}
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "runner").mkdir(exist_ok=True)
    return subprocess.run([*shell, str(script)], env={**base, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)


def github_env(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / "github_env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_deploys_on_a_push_to_main_one_at_a_time_with_the_essential_steps() -> None:
    data = workflow()
    assert data[True] == {"push": {"branches": ["main"]}}  # YAML 1.1 reads the key `on` as True
    assert data["concurrency"]["group"] and data["concurrency"]["cancel-in-progress"] is False
    uses = [each.get("name", each.get("uses")) for each in steps()]
    assert uses == ["actions/checkout@v4", "actions/setup-python@v5", "actions/setup-node@v4", "Install nextdeploy",
                    "Load the deploy key into an agent", "Pin the hosts' keys", "Restore the build cache", "Deploy",
                    "Stop the agent"]
    assert "pip install" in step("Install nextdeploy")["run"]


def test_the_build_cache_is_the_build_dir_kept_between_runs() -> None:
    cache = step("Restore the build cache")
    assert cache["uses"].startswith("actions/cache@")
    assert cache["with"]["path"] == "${{ env.BUILD_DIR }}" and workflow()["env"]["BUILD_DIR"] == "~/.cache/nextdeploy"
    # a new key per commit (a cache entry is never updated), restored from the newest one before it
    assert "${{ github.sha }}" in cache["with"]["key"]
    assert cache["with"]["key"].startswith(cache["with"]["restore-keys"])


def test_secrets_only_reach_a_step_through_its_environment_and_no_host_key_is_trusted_blindly() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    for each in steps():
        for value in (each.get("run", ""), *each.get("with", {}).values()):
            assert "secrets." not in str(value), each  # expanded into the script file on the runner's disk
    assert re.findall(r"\$\{\{ secrets\.(\w+) \}\}", text) == ["DEPLOY_SSH_KEY"]
    assert step("Load the deploy key into an agent")["env"] == {"SSH_PRIVATE_KEY": "${{ secrets.DEPLOY_SSH_KEY }}"}
    for blind in ("StrictHostKeyChecking no", "StrictHostKeyChecking=no", "accept-new", "ssh-keyscan",
                  "UserKnownHostsFile /dev/null", "UserKnownHostsFile=/dev/null"):
        assert blind not in text


def test_the_key_goes_into_an_agent_and_nowhere_else(tmp_path: Path) -> None:
    if shutil.which("ssh-agent") is None:
        pytest.skip("no ssh-agent")
    keygen(tmp_path / "key", "deploy")
    private = (tmp_path / "key").read_text()
    (tmp_path / "key").unlink()  # nothing on disk holds the key now but what the step writes
    loaded = run_step("Load the deploy key into an agent", tmp_path, {"SSH_PRIVATE_KEY": private})
    env = github_env(tmp_path)
    try:
        assert loaded.returncode == 0, loaded.stderr
        body = private.splitlines()[1]
        assert body not in loaded.stdout + loaded.stderr
        for file in tmp_path.rglob("*"):
            if file.is_file():
                assert body not in file.read_text(errors="replace"), file
        listed = subprocess.run(["ssh-add", "-L"], env={**os.environ, "SSH_AUTH_SOCK": env["SSH_AUTH_SOCK"]},
                                capture_output=True, text=True, timeout=10)
        public = (tmp_path / "key.pub").read_text().split()[1]
        assert listed.returncode == 0 and public in listed.stdout
        stopped = run_step("Stop the agent", tmp_path, env)
        assert stopped.returncode == 0, stopped.stderr
        assert not Path(env["SSH_AUTH_SOCK"]).exists()
    finally:
        if "SSH_AGENT_PID" in env:
            try:
                os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_the_hosts_keys_are_pinned_from_the_variable(tmp_path: Path) -> None:
    lines = "web1.example.com ssh-ed25519 AAAAC3one\nweb2.example.com ssh-ed25519 AAAAC3two"
    pinned = run_step("Pin the hosts' keys", tmp_path, {"SSH_KNOWN_HOSTS": lines})
    assert pinned.returncode == 0, pinned.stderr
    known = tmp_path / "home/.ssh/known_hosts"
    assert known.read_text() == lines + "\n" and stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert "StrictHostKeyChecking yes" in (tmp_path / "home/.ssh/config").read_text()
    empty = run_step("Pin the hosts' keys", tmp_path, {"SSH_KNOWN_HOSTS": ""})
    assert empty.returncode == 1 and "::error::the variable SSH_KNOWN_HOSTS is empty" in empty.stdout


def stand_in(tmp_path: Path, fail: str = "", code: int = 0, said: str = "") -> dict[str, str]:
    """A ``nextdeploy`` first on PATH that records its arguments and fails as told."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nextdeploy"
    (tmp_path / "said").write_text(said + "\n")
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\necho \"running $1\"\n"
                    f"if [ \"$1\" = {fail!r} ]; then cat {tmp_path}/said >&2; exit {code}; fi\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().split()


def test_the_deploy_step_runs_the_commands_the_fleet_tests_run(tmp_path: Path) -> None:
    ran = run_step("Deploy", tmp_path, stand_in(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert calls(tmp_path) == list(FLEET_COMMANDS)
    assert "running deploy" in ran.stdout  # the log shows as it goes
    assert "::error" not in ran.stdout


def test_a_failed_deploy_fails_the_job_with_nextdeploys_message(tmp_path: Path) -> None:
    said = "web2: preflight failed\nerror: another deploy of this fleet holds the lock, 100% sure (fix: wait)"
    ran = run_step("Deploy", tmp_path, stand_in(tmp_path, "deploy", 12, said))
    assert ran.returncode == 12
    assert ran.stdout.splitlines()[-1] == ("::error title=nextdeploy deploy failed (exit 12)::error: another deploy "
                                           "of this fleet holds the lock, 100%25 sure (fix: wait)")
    assert "web2: preflight failed" in ran.stdout  # the whole output is in the log too


def test_a_failed_setup_stops_before_the_deploy(tmp_path: Path) -> None:
    ran = run_step("Deploy", tmp_path, stand_in(tmp_path, "setup", 15, "error: web1 has no rsync (fix: install it)"))
    assert ran.returncode == 15 and calls(tmp_path) == ["setup"]
    assert ran.stdout.splitlines()[-1] == ("::error title=nextdeploy setup failed (exit 15)::error: web1 has no "
                                           "rsync (fix: install it)")
