"""`nextdeploy demo` for real, installed from the wheel: v1, v2 under load, a broken v3 rejected, a rollback;
nothing left running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import have_node_tools
from nextdeploy.host.procs import live_processes
from support.site import REPO, TOOLS_BIN, kill_processes_under, tool_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node_tools(), reason="needs node, and pnpm + pm2 under .tools/ (run scripts/test)"),
]


def processes_under(base: Path) -> list[str]:
    """Command lines of live processes whose cwd or command line is inside ``base``."""
    return [f"{pid}: {cmdline}" for pid, cwd, cmdline in live_processes()
            if cwd.startswith(str(base)) or str(base) in cmdline]


def user_env(venv: Path) -> dict[str, str]:
    """A user's environment after `pip install nextdeploy`: the venv and node + npm on PATH, no pnpm, no pm2."""
    env = tool_env()
    parts = [p for p in env["PATH"].split(os.pathsep) if p and p != str(TOOLS_BIN)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *parts])
    for name in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    return env


def install_wheel(tmp_path: Path) -> Path:
    """Build nextdeploy's wheel and install it, without extras, into a fresh venv; returns the venv."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("nextdeploy-*.whl")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return venv


def test_demo_after_a_plain_pip_install_deploys_under_load_rejects_rolls_back_and_stops(tmp_path: Path) -> None:
    """`pip install nextdeploy` then `nextdeploy demo`, for a user who has only node and npm: the deploy installs
    pnpm and pm2 with npm into the demo's deploy root, and the plot (matplotlib) is the only part left out."""
    venv = install_wheel(tmp_path)
    env = user_env(venv)
    assert shutil.which("pm2", path=env["PATH"]) is None and shutil.which("pnpm", path=env["PATH"]) is None
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import nextdeploy, aiohttp, importlib.util; "
                                "print(nextdeploy.__file__, importlib.util.find_spec('matplotlib'))"],
                               capture_output=True, text=True, check=True, env=env, timeout=60)
    assert installed.stdout.startswith(str(venv)) and installed.stdout.strip().endswith("None"), installed.stdout
    demo_dir = tmp_path / "demo"
    try:
        completed = subprocess.run(
            [str(venv / "bin" / "nextdeploy"), "demo", "--dir", str(demo_dir)],
            capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output
        url = re.search(r"URL: (http://127\.0\.0\.1:\d+)", output)
        assert url, output
        assert "failed requests: 0" in output, output
        assert re.search(r"deploy v2\s.*live: v2", output), output
        assert re.search(r"deploy v3 \(crash-at-boot\)\s.*rejected; v2 kept", output), output
        assert re.search(r"rollback\s.*rolled back to v1", output), output
        assert re.search(r"served during the load \(\d+ requests\): v1: \d+, v2: \d+$", output, re.M), output
        assert "v3:" not in output.split("served during the load")[1], output
        assert (demo_dir / "demo-results.json").is_file()
        assert "plot skipped: matplotlib is not installed (pip install 'nextdeploy[plot]')" in output, output
        assert not (demo_dir / "timeline.png").exists()
        assert (demo_dir / "root" / "tools" / "node_modules" / ".bin" / "pm2").exists()  # installed by the deploy
        assert "stopped the demo's PM2 daemon" in output
        # Nothing left: no node, no PM2 daemon, and the port is closed.
        assert processes_under(demo_dir) == [], output
        pm2_pid = demo_dir / "pm2" / "pm2.pid"
        assert not pm2_pid.exists() or not Path(f"/proc/{pm2_pid.read_text().strip()}").exists()
    finally:
        kill_processes_under(tmp_path)


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    completed = subprocess.run([sys.executable, "-m", "nextdeploy", "demo", "--dir", str(tmp_path)],
                               capture_output=True, text=True, timeout=60, env=tool_env())
    assert completed.returncode == 6, completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path} is not empty")
    assert "Traceback" not in completed.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
