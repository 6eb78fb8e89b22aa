"""Git sources: a cached mirror under the root, the exact ref checked out, the revision recorded."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from nextdeploy.core.errors import ExitCode
from support.site import Site

pytestmark = pytest.mark.integration


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "HOME": str(repo),
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                               "PATH": "/usr/bin:/bin"}).stdout.strip()


def test_deploys_the_exact_ref_from_a_mirror(site: Site) -> None:
    repo = site.app_dir
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    v1_commit = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "release-1")
    site.set_version("v2")
    git(repo, "commit", "-q", "-am", "v2")
    v2_commit = git(repo, "rev-parse", "HEAD")
    site.set_version("v3-uncommitted")  # a dirty working tree must not leak into a git deploy

    site.write_config(app={"ref": "main"}, health={"stable_for": 1})
    result = site.deploy()
    assert result.code == 0, result.output
    assert site.version() == "v2"
    assert site.releases()[-1]["revision"] == v2_commit
    assert (site.root / "cache" / "git-mirror").is_dir()

    site.write_config(app={"ref": "release-1"}, health={"stable_for": 1})
    result = site.deploy()
    assert result.code == 0, result.output
    assert site.version() == "v1"
    assert site.releases()[-1]["revision"] == v1_commit
    # The working tree was never built in.
    assert not (repo / "node_modules").exists() and not (repo / ".next").exists()

    site.write_config(app={"ref": "no-such-branch"})
    missing = site.deploy()
    assert missing.code != 0 and "no-such-branch" in missing.output and "Traceback" not in missing.output
    assert site.version() == "v1"


def test_a_git_remote_that_asks_for_a_password_or_hangs_fails_fast(site: Site) -> None:
    # A deploy has nobody to type a password: git must not ask (it would wait on the terminal forever);
    # a remote that never answers is given up at [app] build_timeout. Both servers on 127.0.0.1.
    class AsksForAPassword(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    private = HTTPServer(("127.0.0.1", 0), AsksForAPassword)
    threading.Thread(target=private.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are queued, never answered
    try:
        site.write_config(app={"source": f"http://127.0.0.1:{private.server_port}/app.git", "ref": "main"})
        result = site.deploy()
        assert result.code == ExitCode.BUILD_FAILED, result.output
        assert "terminal prompts disabled" in result.stderr and "credentials that need no prompt" in result.stderr

        # A token in the URL is never printed (the message shows the command that timed out).
        site.write_config(app={"source": f"http://deploy:tok-s3cret@127.0.0.1:{silent.getsockname()[1]}/app.git",
                               "ref": "main", "build_timeout": 2})
        started = time.monotonic()
        result = site.deploy()
        assert result.code == ExitCode.BUILD_FAILED, result.output
        assert "timed out after 2 s" in result.stderr and "raise [app] build_timeout" in result.stderr
        assert "tok-s3cret" not in result.output and "http://***@127.0.0.1:" in result.stderr, result.stderr
        assert time.monotonic() - started < 20
    finally:
        private.shutdown()
        private.server_close()
        silent.close()
