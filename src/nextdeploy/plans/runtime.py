"""The environment a release runs with, the same for the preflight and for the PM2 workers."""

from __future__ import annotations

from nextdeploy.core.config import Config


def runtime_env(config: Config, port: int, hostname: str, secrets: dict[str, str] | None = None) -> dict[str, str]:
    """Env for ``launcher.cjs``: user env first, then what nextdeploy must control."""
    drain_ms = max(1000, config.server.kill_timeout - 2000)
    return {
        **config.server.env,
        **(secrets or {}),
        "NODE_ENV": "production",
        "PORT": str(port),
        "HOSTNAME": hostname,
        "NEXT_TELEMETRY_DISABLED": "1",
        "NEXTDEPLOY_READY_PATH": config.health.path,
        "NEXTDEPLOY_READY_TIMEOUT_MS": str(config.server.listen_timeout - 1000),
        "NEXTDEPLOY_DRAIN_TIMEOUT_MS": str(drain_ms),
        # Requested once by each new worker before it takes traffic (their first request loads their code).
        **({"NEXTDEPLOY_WARM_PATHS": "\n".join(config.health.smoke)} if config.health.smoke else {}),
    }
