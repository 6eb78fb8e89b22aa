"""basePath-aware checks (nextdeploy.core.checks): which paths a release is probed on, and where they are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextdeploy.core.checks import base_path_of, health_hint, planned_checks, release_health, under_base
from nextdeploy.core.config import HealthConfig


@pytest.mark.parametrize(("base", "path", "expected"), [
    ("", "/api/health", "/api/health"),
    ("/b", "/api/health", "/b/api/health"),
    ("/b", "/b/api/health", "/b/api/health"),  # already under it: as written
    ("/b", "/b", "/b"),
    ("/b", "/", "/b"),  # "/b/" would be redirected to "/b"
    ("/b", "/blog", "/b/blog"),  # a path that only starts with the same letters is not under /b
    ("/docs/v2", "/api/health?x=1", "/docs/v2/api/health?x=1"),
])
def test_under_base(base: str, path: str, expected: str) -> None:
    assert under_base(base, path) == expected


def test_base_path_from_the_resolved_config_else_the_routes_manifest() -> None:
    assert base_path_of({"basePath": "/b"}) == "/b"
    assert base_path_of({"basePath": ""}, {"basePath": "/r/"}) == "/r"
    assert base_path_of({}, None) == ""
    assert base_path_of({"basePath": None}, {"basePath": ""}) == ""


def _release(tmp_path: Path, manifest: dict[str, object]) -> Path:
    (tmp_path / ".nextdeploy").mkdir()
    (tmp_path / ".nextdeploy" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_a_release_is_probed_on_its_recorded_paths(tmp_path: Path) -> None:
    health = HealthConfig(path="/api/health", smoke=["/", "/b/blog"], expect_body="ok")
    checks = planned_checks(health, "/b")
    assert checks == {"base_path": "/b", "health": "/b/api/health", "smoke": ["/b", "/b/blog"]}
    release = _release(tmp_path, {"id": "r", "checks": checks})
    # Recorded once: the configured path can change later, the release keeps being checked as it was.
    probed = release_health(HealthConfig(path="/healthz", expect_body="ok"), release)
    assert (probed.path, probed.smoke, probed.expect_body) == ("/b/api/health", ["/b", "/b/blog"], "ok")
    assert "basePath is /b" in health_hint(probed, release)


def test_a_release_without_a_record_is_probed_on_the_configured_paths(tmp_path: Path) -> None:
    release = _release(tmp_path, {"id": "r"})
    health = HealthConfig(path="/api/health", smoke=["/"])
    assert release_health(health, release) == health
    assert "basePath" not in health_hint(health, release)
