"""`nextdeploy demo` for real: v1, v2 under load, a broken v3 rejected, a rollback; nothing left running."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from conftest import have_node_tools
from nextdeploy.executor import live_processes
from support.site import kill_processes_under, tool_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node_tools(), reason="needs node, and pnpm + pm2 under .tools/ (run scripts/test)"),
]


def processes_under(base: Path) -> list[str]:
    """Command lines of live processes whose cwd or command line is inside ``base``."""
    return [f"{pid}: {cmdline}" for pid, cwd, cmdline in live_processes()
            if cwd.startswith(str(base)) or str(base) in cmdline]


def test_demo_deploys_under_load_rejects_a_broken_release_rolls_back_and_stops(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "nextdeploy", "demo", "--dir", str(demo_dir)],
            capture_output=True, text=True, timeout=420, env=tool_env(), stdin=subprocess.DEVNULL,
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
        if importlib.util.find_spec("matplotlib") is not None:
            assert (demo_dir / "timeline.png").stat().st_size > 10_000
        else:
            assert "plot skipped: matplotlib is not installed" in output
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
