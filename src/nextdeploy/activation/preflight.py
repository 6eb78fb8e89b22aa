"""The health gate before traffic: run the new release on a free loopback port, outside PM2.

The release must answer its health path within ``[health] timeout``, then stay up and healthy for
``[health] stable_for`` seconds (a release that crashes 3 s after start fails here, not in front of
users). Its output goes to ``logs/preflight-<id>.log``; the tail is shown on failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from nextdeploy.activation.window import EXIT_GRACE, INCLUDE_FIX, THE_RELEASE, StabilityWindow, fatal_output
from nextdeploy.core.checks import health_hint, release_health
from nextdeploy.core.config import Config, HealthConfig
from nextdeploy.core.errors import PreflightError
from nextdeploy.core.faults import checkpoint
from nextdeploy.core.paths import ReleaseLayout
from nextdeploy.host.files import open_private
from nextdeploy.host.probe import health_problem, http_get, listen_port
from nextdeploy.host.procs import kill_process_group
from nextdeploy.nextjs.smoke import run_smoke

# Polls before the first good answer are cheap (a refused connect): poll fast so a boot is seen early.
BOOT_POLL_INTERVAL = 0.05
POLL_INTERVAL = 0.2
# In the preflight server's environment: the deploy root it was started for (see ``leftover_processes``).
PREFLIGHT_MARKER = "NEXTDEPLOY_PREFLIGHT_FOR"
# Server output that means the release is broken even if its health route answers.
FATAL_OUTPUT_MARKERS = ("MODULE_NOT_FOUND", "Cannot find module")


@dataclass
class PreflightReport:
    port: int
    seconds_to_healthy: float
    checks: list[str] = field(default_factory=list)


def spawn_argv(node: str, layout: ReleaseLayout) -> list[str]:
    return [node, str(layout.launcher_file)]


def run_preflight(config: Config, layout: ReleaseLayout, node: str, env: dict[str, str],
                  log_file: Path) -> PreflightReport:
    """Start the release, gate on health and stability, always stop it. Raises PreflightError."""
    port = int(env["PORT"]) if env.get("PORT") else listen_port()
    # NEXTDEPLOY_HOLD=0: the launcher serves its port at once (the hold is for workers under PM2).
    # The marker: a deploy killed here leaves this server running; the next command finds it by it.
    env = {**os.environ, **env, "PORT": str(port), "HOSTNAME": "127.0.0.1", "NEXTDEPLOY_HOLD": "0",
           PREFLIGHT_MARKER: str(config.root)}
    started = time.monotonic()
    with open_private(log_file, append=False) as log:  # the app's output: secrets too
        # Own session: stopping the process group also stops anything the server spawned. Not niced like
        # the build: on a host the live app keeps busy, a starved server would miss its health timeout.
        process = subprocess.Popen(
            spawn_argv(node, layout), cwd=layout.app_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            checkpoint("preflight")
            report = _gate(release_health(config.health, layout.release_dir), layout, process, port, started,
                           log_file)
        except BaseException as exc:
            # Also on Ctrl-C, SIGTERM or SIGHUP: in its own session the server gets none of them itself.
            _stop(process)
            if isinstance(exc, PreflightError):
                exc.details = _tail(log_file) + exc.details
            raise
        _stop(process)
    fatal = _fatal_output(log_file)
    if fatal:
        error = fatal_output("the release", fatal, f"see {log_file}; {INCLUDE_FIX}", during=" during the preflight")
        error.details = _tail(log_file)
        raise error
    return report


def _gate(health: HealthConfig, layout: ReleaseLayout, process: subprocess.Popen[bytes], port: int, started: float,
          log_file: Path) -> PreflightReport:
    window = StabilityWindow(health.stable_for, health.timeout, started)
    checks: list[str] = []
    while True:
        exit_code = process.poll()
        if exit_code is not None:
            raise window.exited(THE_RELEASE, 0, exit_code, time.monotonic(), since_start=True)
        problem = health_problem(http_get("127.0.0.1", port, health.path, health.request_timeout), health)
        now = time.monotonic()
        if problem is None:
            if window.answered(0, now):
                # The smoke routes run inside the stability window (it only waits otherwise); the window
                # still ends after them, and MODULE_NOT_FOUND they provoke is caught after the window.
                checks = run_smoke(health, port)
                continue
            if window.over(now):
                # One more liveness look: the process must still be there at the end of the window.
                if process.poll() is None:
                    return PreflightReport(port, (window.opened or started) - started, checks)
                continue
        elif window.opened is not None:
            # A reset connection is often a process on its way out: let the exit (and its code) show first.
            try:
                process.wait(timeout=EXIT_GRACE)
                continue
            except subprocess.TimeoutExpired:
                pass
            raise window.unhealthy(THE_RELEASE, 0, problem, now)
        elif window.timed_out(now):
            raise window.not_healthy(problem, _launcher_reason(log_file), health_hint(health, layout.release_dir))
        time.sleep(POLL_INTERVAL if window.opened is not None else BOOT_POLL_INTERVAL)


def _launcher_reason(log_file: Path) -> str:
    try:
        return launcher_reason(log_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""


def launcher_reason(output: str) -> str:
    """The launcher's last 'not ready' line in ``output``: why the public port never opened (e.g. health
    answered 500), as " (the server: ...)", or ""."""
    reasons = [line.split("not ready: ", 1)[1] for line in output.splitlines() if "] not ready: " in line]
    return f" (the server: {reasons[-1]})" if reasons else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the preflight server and everything it spawned. It never had users: no drain needed."""
    kill_process_group(process.pid)
    process.wait()


def _tail(log_file: Path, lines: int = 20) -> list[str]:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [f"  | {line}" for line in text.splitlines()[-lines:]]


def _fatal_output(log_file: Path) -> str | None:
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return next((marker for marker in FATAL_OUTPUT_MARKERS if marker in text), None)
