"""The preflight's stability window on a real server process (a few lines of node, no Next.js build): what it
says about a server that crashes at boot, dies in the window, turns unhealthy or never answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nextdeploy.activation.preflight import run_preflight
from nextdeploy.core.config import parse_config
from nextdeploy.core.errors import PreflightError
from nextdeploy.core.paths import ReleaseLayout

SERVER = """
const http = require('http');
const started = Date.now();
const mode = %r;
if (mode === 'crash-at-boot') { console.error('boom'); process.exit(1); }
http.createServer((req, res) => {
  const late = Date.now() - started > 600;
  if (mode === 'unhealthy-later' && late) { res.statusCode = 500; }
  res.end('{"status":"ok"}');
}).listen(mode === 'never-listens' ? 0 : +process.env.PORT, '127.0.0.1');
if (mode === 'exit-later') setTimeout(() => process.exit(3), 600);
"""


def _preflight(tmp_path: Path, mode: str, stable_for: float = 1.0, timeout: float = 1.5) -> float:
    layout = ReleaseLayout(tmp_path / "release")
    layout.launcher_file.parent.mkdir(parents=True)
    layout.launcher_file.write_text(SERVER % mode)
    config = parse_config({"app": {"name": "hello", "source": "app"}, "server": {"root": str(tmp_path / "root")},
                           "health": {"path": "/", "stable_for": stable_for, "timeout": timeout}}, tmp_path)
    return run_preflight(config, layout, "node", {}, tmp_path / "preflight.log").seconds_to_healthy


def test_a_server_that_stays_healthy_passes_after_its_window(tmp_path: Path) -> None:
    assert 0 < _preflight(tmp_path, "healthy", stable_for=0.3) < 3


@pytest.mark.parametrize(("mode", "message"), [
    ("crash-at-boot", r"^the new release exited with code 1 before answering its health check$"),
    ("exit-later", r"^the new release exited with code 3 0\.\d s after start, during the 1 s stability window$"),
    ("unhealthy-later", r"^the new release became unhealthy 0\.\d s after its first good answer, during the 1 s "
                        r"stability window: .*500"),
    ("never-listens", r"^the new release was not healthy within 1\.5 s: "),
])
def test_a_broken_server_fails_the_window_saying_when(tmp_path: Path, mode: str, message: str) -> None:
    with pytest.raises(PreflightError) as failed:
        _preflight(tmp_path, mode)
    assert re.search(message, failed.value.message), failed.value.message
    assert "the old release is still serving" in (failed.value.hint or ""), failed.value.hint
