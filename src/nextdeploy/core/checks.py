"""How a release is checked: ``[health]``'s path and smoke routes under the build's ``basePath``.

An app built with ``basePath: "/b"`` answers only under ``/b``: its health route is ``/b/api/health``. A
configured path that already starts with the basePath stays as written. The paths are worked out when the
release is assembled and recorded in its manifest (``checks``); everything that probes the release (the
preflight, the held window, verify, the launcher's readiness and warm-up, a rollback to it later) uses the
recorded ones, so a release is always checked the way it was when it first went live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nextdeploy.core.config import HealthConfig
from nextdeploy.core.manifest import read_manifest


def base_path_of(next_config: dict[str, Any], routes_manifest: dict[str, Any] | None = None) -> str:
    """The build's ``basePath`` ("" when none): the resolved config's, else routes-manifest.json's."""
    for source in (next_config, routes_manifest or {}):
        value = source.get("basePath")
        if isinstance(value, str) and value.strip("/"):
            return "/" + value.strip("/")
    return ""


def under_base(base_path: str, path: str) -> str:
    """``path`` as the app serves it under ``base_path`` (unchanged when it is already under it)."""
    if not base_path or path == base_path or path.startswith((base_path + "/", base_path + "?")):
        return path
    return base_path if path == "/" else base_path + path


def planned_checks(health: HealthConfig, base_path: str) -> dict[str, Any]:
    """What the manifest records: the basePath and the paths probed (health, then the smoke routes)."""
    return {"base_path": base_path, "health": under_base(base_path, health.path),
            "smoke": [under_base(base_path, route) for route in health.smoke]}


def recorded_checks(release_dir: Path) -> dict[str, Any] | None:
    """The checks recorded in the release's manifest, or None (a release made before they were)."""
    checks = (read_manifest(release_dir) or {}).get("checks")
    if not isinstance(checks, dict) or not isinstance(checks.get("health"), str):
        return None
    smoke = checks.get("smoke")
    return {"base_path": str(checks.get("base_path") or ""), "health": checks["health"],
            "smoke": [route for route in smoke if isinstance(route, str)] if isinstance(smoke, list) else []}


def release_health(health: HealthConfig, release_dir: Path) -> HealthConfig:
    """``[health]`` with the release's recorded paths (the configured ones for a release without a record)."""
    checks = recorded_checks(release_dir)
    if checks is None:
        return health
    return health.model_copy(update={"path": checks["health"], "smoke": checks["smoke"]})


def health_hint(health: HealthConfig, release_dir: Path | None) -> str:
    """How to make the health check pass, naming the basePath when the build has one."""
    checks = recorded_checks(release_dir) if release_dir is not None else None
    base = f" (the build's basePath is {checks['base_path']}: [health] paths are probed under it)" if (
        checks and checks["base_path"]) else ""
    return f"make {health.path} answer {health.expect_status}{base} (or raise [health] timeout)"
