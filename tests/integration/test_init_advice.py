"""Issue 20, item 2: every piece of `init`'s advice builds. `init --apply` on the root of a pnpm monorepo whose
TypeScript app has `cacheComponents` on, an untyped `next.config.ts` object passed through a function typed
with NextConfig, no `output` and no health route; then the config init wrote deploys it for real.

Before: the advice was `output: "standalone",` (widened to string: a type error in `next build`), a health
route exporting `dynamic` (rejected by Next with cacheComponents), `path.join(__dirname, '../../')`.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from support.site import Site

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "monorepo-ts"


def test_init_apply_makes_a_typescript_monorepo_app_with_cache_components_deploy(site: Site) -> None:
    mono = site.base / "mono"
    shutil.copytree(FIXTURE, mono, ignore=shutil.ignore_patterns("node_modules", ".next"))
    init = site.nextdeploy("init", str(mono), "--apply", "--force", "-c", str(site.config_path),
                           "--root", str(site.root), "--port", str(site.port)).expect_ok()
    assert "its Next.js app is apps/web" in init.output  # found under the monorepo root
    web = mono / "apps" / "web"
    config_ts = (web / "next.config.ts").read_text()
    assert "output: 'standalone' as const," in config_ts and "__dirname" not in config_ts
    route = (web / "app" / "api" / "health" / "route.ts").read_text()
    assert "await connection()" in route and "export const dynamic" not in route
    assert ";" not in route and '"' not in route  # the app's own style: no semicolons, single quotes

    written = tomllib.loads(site.config_path.read_text())
    assert written["app"]["path"] == "apps/web" and written["health"]["smoke"] == ["/"]
    # The site's own PM2_HOME, so the test's daemon is isolated: the one line init left commented out.
    text = re.sub(r'^# home = .*$', f"home = {json.dumps(str(site.pm2_home))}", site.config_path.read_text(),
                  flags=re.M)
    site.config_path.write_text(text)

    site.nextdeploy("deploy").expect_ok()
    status, body, _ = site.get("/api/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, page, _ = site.get("/")
    assert status == 200 and "hello, typescript, from a workspace package" in page
