"""Issue 21, item 8: build and runtime secrets never reach a log in clear, and every log is the user's alone."""

from __future__ import annotations

import hashlib
import secrets
import stat

import pytest

from nextdeploy.pm2 import rpc as pm2rpc
from support.site import Site

pytestmark = pytest.mark.integration


def test_secrets_stay_out_of_logs_and_every_log_is_private(site: Site) -> None:
    """Also: values the config accepts work end to end (hostname "::", a health path with a query, an env
    name with a dot and a dash)."""
    build_secret, run_secret = f"build-{secrets.token_hex(8)}", f"run-{secrets.token_hex(8)}"
    # The build fails unless build_env reached it (masking must hide the value, not drop it).
    digest = hashlib.sha256(build_secret.encode()).hexdigest()
    check = f'test "$(printf %s "$BUILD_TOKEN" | sha256sum | cut -c1-64)" = {digest}'
    site.write_config(app={"build_env": {"BUILD_TOKEN": build_secret}, "build_command": f"{check} && pnpm run build"},
                      server={"env": {"DB_PASSWORD": run_secret, '"dotted.lower-name"': "a b"},  # a quoted TOML key
                              "hostname": "::"},  # values the config accepts work: IPv6's wildcard, a query
                      health={"path": "/api/health?from=nextdeploy"})
    # A root from before: logs/ 0755 with a world-readable PM2 log in it.
    logs = site.root / "logs"
    logs.mkdir(parents=True)
    logs.chmod(0o755)
    old_log = logs / f"pm2-{site.app_name}.out.log"
    old_log.write_text("an older line\n")
    old_log.chmod(0o644)

    dry = site.nextdeploy("deploy", "--dry-run")
    assert dry.code == 0 and "BUILD_TOKEN=***" in dry.stdout and "DB_PASSWORD=***" in dry.stdout, dry.output
    assert build_secret not in dry.output and run_secret not in dry.output
    result = site.deploy()
    result.expect_ok()
    assert build_secret not in result.output and run_secret not in result.output
    release = site.current()

    # Every log is 0600 in a 0700 logs/: the build's, the preflight's (first deploy) and PM2's two.
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    names = sorted(path.name for path in logs.iterdir())
    assert names == sorted([f"build-{release}.log", f"preflight-{release}.log", old_log.name,
                            f"pm2-{site.app_name}.err.log", f"pm2-{site.app_name}.raw.log"]), names
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in logs.iterdir()} == dict.fromkeys(names, 0o600)
    assert old_log.read_text().startswith("an older line\n") and "ready in" in old_log.read_text()  # appended
    build_log = (logs / f"build-{release}.log").read_text()
    assert build_log.count("BUILD_TOKEN=***") == 2, build_log  # the install's and the build's header lines
    for path in logs.iterdir():
        text = path.read_text(errors="replace")
        assert build_secret not in text and run_secret not in text, path

    # Serving on "::" (IPv4 too), healthy by the path with a query.
    status = site.nextdeploy("status", "--json").json()
    assert status["healthy"] and len(status["workers"]) == 2, status
    assert site.get("/api/health?from=nextdeploy")[0] == 200
    # The workers have the values, an odd but valid name included.
    envs = [entry["pm2_env"]["env"] for entry in pm2rpc.process_list(site.pm2_home)]
    assert [(env["DB_PASSWORD"], env["dotted.lower-name"]) for env in envs] == [(run_secret, "a b")] * 2
