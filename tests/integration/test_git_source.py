"""Git sources: a cached mirror under the root, the exact ref checked out, the revision recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
