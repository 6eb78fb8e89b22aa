"""A deploy target for integration tests: an example-app copy, a config, a deploy root, a PM2_HOME.

Everything lives in one temp dir; ``Site.close()`` kills the PM2 daemon of its own PM2_HOME and any
process still running from its root, so a failed test leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextdeploy.benchkit.target import kill_processes_under
from nextdeploy.demo.exampleapp import copy_example, set_version
from nextdeploy.host.probe import listen_port

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "node_modules" / ".bin"


def tool_env() -> dict[str, str]:
    """The environment for running nextdeploy, pnpm and pm2 in tests."""
    env = dict(os.environ)
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("HOSTNAME", None)  # Next binds to $HOSTNAME
    env["NO_COLOR"] = "1"
    env["PM2_DISABLE_VERSION_CHECK"] = "1"
    return env


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def expect_ok(self) -> Run:
        """Fail the test with the command's whole output unless it exited 0 (an assert on ``code`` alone
        shows a truncated repr: the reason a deploy failed would be cut off)."""
        assert self.code == 0, f"exit {self.code}:\n{self.output}"
        return self


def run_nextdeploy(config_path: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
    """Run the real CLI in a subprocess with ``-c config_path`` (unless ``args`` give a -c)."""
    config = [] if "-c" in args else ["-c", str(config_path)]
    completed = subprocess.run(
        [sys.executable, "-m", "nextdeploy", *args, *config],
        capture_output=True, text=True, timeout=timeout, env={**tool_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class Site:
    base: Path
    port: int = field(default_factory=listen_port)
    instances: int = 2
    app_name: str = "hello"

    def __post_init__(self) -> None:
        self.app_dir = self.base / "app"
        self.root = self.base / "root"
        self.pm2_home = self.base / "pm2"
        self.config_path = self.base / "nextdeploy.toml"
        self.pm2_home.mkdir(parents=True, exist_ok=True)
        (self.pm2_home / "touch").write_text("0")  # no first-run banner or version check from PM2
        copy_example(self.app_dir, "v1")
        self.write_config()

    # Set-up -------------------------------------------------------------------------------------

    def write_config(self, extra: str = "", **sections: dict[str, Any]) -> None:
        """Write nextdeploy.toml; ``sections`` override keys, e.g. health={"timeout": 10}."""
        config: dict[str, dict[str, Any]] = {
            "app": {"name": self.app_name, "source": str(self.app_dir)},
            "server": {"root": str(self.root), "port": self.port, "instances": self.instances},
            "pm2": {"home": str(self.pm2_home)},
            "health": {"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 15, "stable_for": 4},
            "releases": {"keep": 5},
        }
        self.config_path.write_text(config_text(config, sections) + extra)

    def set_version(self, version: str, variant: str = "good") -> None:
        set_version(self.app_dir, version, variant)

    # Actions ------------------------------------------------------------------------------------

    def nextdeploy(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
        """Run the real CLI in a subprocess against this site's config."""
        return run_nextdeploy(self.config_path, *args, timeout=timeout, env=env)

    def deploy(self, version: str | None = None, variant: str = "good", *args: str) -> Run:
        if version is not None:
            self.set_version(version, variant)
        return self.nextdeploy("deploy", *args)

    def pm2(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**tool_env(), "PM2_HOME": str(self.pm2_home)}
        return subprocess.run([str(TOOLS_BIN / "pm2"), *args], capture_output=True, text=True, env=env, timeout=120)

    # Looking -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str = "/api/health", timeout: float = 5) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return response.status, response.read().decode(), headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), {k.lower(): v for k, v in error.headers.items()}

    def version(self) -> str:
        return str(json.loads(self.get("/api/health")[1]).get("version"))

    def current(self) -> str | None:
        link = self.root / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def releases(self) -> list[dict[str, Any]]:
        result = self.nextdeploy("releases", "--json")
        assert result.code == 0, result.output
        data: list[dict[str, Any]] = result.json()
        return data

    def pm2_log_size(self) -> int:
        """Where PM2's daemon log ends now: pass it to ``pm2_log_since`` to read what follows."""
        return (self.pm2_home / "pm2.log").stat().st_size

    def pm2_log_since(self, offset: int) -> str:
        return (self.pm2_home / "pm2.log").read_bytes()[offset:].decode(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        log = self.root / "releases.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    # Tear-down -----------------------------------------------------------------------------------

    def close(self) -> None:
        self.pm2("kill")
        kill_processes_under(self.base)


def config_text(config: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]]) -> str:
    """TOML of ``config``, its sections' keys updated by ``sections``'."""
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    lines = []
    for name, values in config.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)
