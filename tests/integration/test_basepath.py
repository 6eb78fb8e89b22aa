"""Issue 20, item 5: an app built with a basePath is checked under it, a rollback target is checked before
traffic moves to it, and every put-back (after a failed verify, a rollback) loses no request.
Real next builds, real pm2, load on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nextdeploy.exampleapp import set_base_path
from support.site import Site

pytestmark = pytest.mark.integration


def manifest(site: Site, release: str | None) -> dict[str, Any]:
    assert release is not None
    data: dict[str, Any] = json.loads((site.root / "releases" / release / ".nextdeploy" / "manifest.json").read_text())
    return data


def statuses(site: Site) -> dict[str, str]:
    return {r["id"]: r["status"] for r in site.releases()}


def test_a_base_path_release_is_probed_under_it(site: Site) -> None:
    """The health path and smoke routes are probed under the build's basePath (the preflight, the launcher's
    readiness and warm-up), and the paths are recorded in the release's manifest."""
    set_base_path(site.app_dir, "/b")
    site.write_config(health={"path": "/api/health", "smoke": ["/", "/b/api/health?smoke=1"], "timeout": 10,
                              "stable_for": 1})
    site.deploy().expect_ok()
    v1 = site.current()
    assert manifest(site, v1)["checks"] == {"base_path": "/b", "health": "/b/api/health",
                                            "smoke": ["/b", "/b/api/health?smoke=1"]}
    status, body, _ = site.get("/b/api/health")
    assert status == 200 and '"status":"ok"' in body
    out_log = (site.root / "logs" / f"pm2-{site.app_name}.out.log").read_text()
    assert "(GET /b/api/health -> 200; warmed " in out_log, out_log
    live = site.nextdeploy("status", "--json").json()
    assert live["healthy"] is True, live
