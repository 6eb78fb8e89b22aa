"""Finding external tools: pm2 missing from PATH is installed into the deploy root's tools prefix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nextdeploy.core.errors import ToolMissingError
from nextdeploy.host.tools import require_tool

pytestmark = pytest.mark.integration


def test_pm2_is_installed_into_the_tools_prefix_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.skip("needs node and npm")
    # A PATH with node and npm but no pm2.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (node, npm):
        (bin_dir / Path(tool).name).symlink_to(tool)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    if shutil.which("pm2"):
        pytest.skip("pm2 is installed system-wide here")
    tools_dir = tmp_path / "tools"
    with pytest.raises(ToolMissingError, match="pm2"):
        require_tool("pm2", tools_dir)
    pm2 = require_tool("pm2", tools_dir, install=True)
    assert pm2 == str(tools_dir / "node_modules" / ".bin" / "pm2")
    version = subprocess.run([pm2, "--version"], capture_output=True, text=True, env={
        "PATH": f"{bin_dir}:/usr/bin:/bin", "PM2_HOME": str(tmp_path / "pm2"), "HOME": str(tmp_path)})
    subprocess.run([pm2, "kill"], capture_output=True, env={
        "PATH": f"{bin_dir}:/usr/bin:/bin", "PM2_HOME": str(tmp_path / "pm2"), "HOME": str(tmp_path)})
    assert version.stdout.strip().splitlines()[-1].startswith("7.")
    # Found there next time without installing again.
    assert require_tool("pm2", tools_dir) == pm2
