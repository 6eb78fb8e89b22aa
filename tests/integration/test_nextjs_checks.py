"""Issue 5, items 5 and 7: releases the traces or the smoke routes prove broken are rejected before the
switch, under bounded load, with zero failed requests.

- a traced file missing from the release: a ``[release] exclude`` glob removes a file the route traces name;
- a trace naming a path outside the tracing root: ``[app] build_command`` runs the real build, then adds
  such a path to a route trace, as a compromised build step could (``mode = "traced"``, the mode that would
  copy it); the file outside must not be copied anywhere;
- a page that answers 500 while /api/health is fine (variant ``page-throws``): rejected with
  ``[health] smoke = ["/"]``, and - the control - accepted without smoke routes, its build output also holding
  a traced pnpm link left dangling (issue 20, item 3: not a missing file).
"""

from __future__ import annotations

import json
import os

import pytest

from nextdeploy.core.errors import ExitCode
from nextdeploy.release.secrets import files_containing
from support.site import Site

pytest.importorskip("aiohttp")
from nextdeploy.demo.loadgen import BackgroundLoad

pytestmark = pytest.mark.integration

RATE = 100
MAX_SECONDS = 300

INJECT_ESCAPE = """
// Test-only: add a path outside the tracing root to the trace of the home page.
const fs = require("fs");
const path = require("path");
const trace = path.join(__dirname, ".next/server/app/page.js.nft.json");
const data = JSON.parse(fs.readFileSync(trace, "utf8"));
data.files.push(path.relative(path.dirname(trace), process.env.OUTSIDE_FILE));
fs.writeFileSync(trace, JSON.stringify(data));
"""

INJECT_DANGLING = """
// Test-only: a hoisted pnpm link that standalone keeps without its package (the server never loads it),
// traced as module resolution passed it.
const fs = require("fs");
const path = require("path");
fs.symlinkSync("../ghost@1.0.0/node_modules/ghost",
               path.join(__dirname, ".next/standalone/node_modules/.pnpm/node_modules/ghost"));
const trace = path.join(__dirname, ".next/next-server.js.nft.json");
const data = JSON.parse(fs.readFileSync(trace, "utf8"));
data.files.push("../node_modules/.pnpm/node_modules/ghost");
fs.writeFileSync(trace, JSON.stringify(data));
"""


def expect_rejected(site: Site, code: ExitCode, *fragments: str) -> str:
    before = site.current()
    result = site.deploy()
    assert result.code == code, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    assert site.current() == before
    return result.output


def test_broken_releases_are_rejected_before_the_switch(site: Site) -> None:
    site.write_config(health={"smoke": ["/", "/action"]})
    good = site.deploy("v1")
    assert good.code == 0, good.output
    live = site.current()
    outside = site.base / "outside-secret.txt"
    outside.write_text("TOP-SECRET-OUTSIDE-THE-SOURCE\n")
    (site.app_dir / "inject-escape.js").write_text(INJECT_ESCAPE)

    load = BackgroundLoad(site.url + "/api/health", rate=RATE, duration=MAX_SECONDS, mode="keepalive",
                          connections=8)
    load.start()
    try:
        site.write_config(health={"smoke": ["/"]}, release={"exclude": ["**/next/dist/lib/picocolors.js"]})
        output = expect_rejected(site, ExitCode.RELEASE_INVALID, "missing from the release",
                                 "removed by [release] exclude", "next/dist/lib/picocolors.js")

        site.write_config(release={"mode": "traced"}, app={
            "build_command": f"pnpm run build && OUTSIDE_FILE={outside} node inject-escape.js"})
        output = expect_rejected(site, ExitCode.RELEASE_INVALID, "outside the tracing root",
                                 "outside-secret.txt")

        site.write_config(health={"smoke": ["/"]})
        site.set_version("v2", "page-throws")
        output = expect_rejected(site, ExitCode.PREFLIGHT_FAILED, "smoke route check failed", "GET / answered 500")
    finally:
        load.stop()
    result = load.result(timeout=MAX_SECONDS + 30)
    # Guards against a load generator that did not run: three rejected deploys take 9-10 s on an idle machine
    # (cached .next/cache, reused node_modules), more under load.
    assert result.total >= RATE * 5, result.summary()
    assert result.failed == 0, result.errors()
    assert set(result.releases_seen()) == {live}
    assert "TOP-SECRET" not in output
    assert files_containing(site.root, "TOP-SECRET-OUTSIDE-THE-SOURCE") == []
    failed = [e for e in site.log_events() if e["event"] == "failed"]
    assert len(failed) == 3 and all(not (site.root / "releases" / e["release"]).exists() for e in failed[:2])

    # The control: the same page-throws release passes without smoke routes (the health route is fine), and
    # with a traced link its build output leaves dangling.
    (site.app_dir / "inject-dangling.js").write_text(INJECT_DANGLING)
    site.write_config(app={"build_command": "pnpm run build && node inject-dangling.js"})
    passed = site.deploy()
    assert passed.code == 0, passed.output
    assert os.readlink(site.root / "current" / "node_modules/.pnpm/node_modules/ghost") == (
        "../ghost@1.0.0/node_modules/ghost")
    assert site.current() != live
    assert site.get("/")[0] == 500
    manifest = json.loads((site.root / "releases" / str(site.current()) / ".nextdeploy" / "manifest.json")
                          .read_text())
    assert manifest["traced_files"] > 500

    # Node engines are checked again before a rollback: Node may have changed since the release was built.
    # (Replace the file, never edit it in place: releases share unchanged dependency files by hard links.)
    package = site.root / "releases" / live / "node_modules" / "next" / "package.json"
    data = json.loads(package.read_text())
    data["engines"] = {"node": ">=99"}
    replacement = package.parent / "package.json.tmp"
    replacement.write_text(json.dumps(data))
    replacement.replace(package)
    broken_live = site.current()
    refused = site.nextdeploy("rollback", "--to", str(live))
    assert refused.code == ExitCode.RELEASE_INVALID, refused.output
    assert "refusing to activate" in refused.output and ">=99" in refused.output and "Traceback" not in refused.output
    assert site.current() == broken_live
