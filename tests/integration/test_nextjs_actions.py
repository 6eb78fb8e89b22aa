"""Issue 5, item 3: a Server Action form rendered by release A still submits after deploying B, and the
Server Actions key stays secret (mode 0600, never in output, logs, --json, dry run or a release).

Submitting without a browser, the way a no-JS form post does: Next 16 renders a progressive-enhancement
form with hidden inputs (``$ACTION_REF_1``, ``$ACTION_1:0`` = ``{"id": <action id>, "bound": ...}`` and
the encrypted closure ``$ACTION_1:2``); the whole form is POSTed as multipart/form-data to the page. The
action id is a hash salted with the key, and the closure is encrypted with it: with another key B answers
409 "Server Action unavailable." (header ``x-nextjs-action-not-found: 1``; "Failed to find Server Action"
in its log), measured with two builds of this page.
"""

from __future__ import annotations

import html
import http.client
import re
import stat
import uuid

import pytest

from nextdeploy.release.secrets import files_containing
from support.site import Site

pytestmark = pytest.mark.integration


def form_fields(page: str) -> list[tuple[str, str]]:
    """The inputs of the first form on the page, as a browser would send them."""
    match = re.search(r"<form[^>]*>(.*?)</form>", page, re.S)
    assert match, "no form on the page"
    fields = []
    for tag in re.findall(r"<input[^>]*>", match.group(1)):
        name = re.search(r'name="([^"]*)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name:
            fields.append((html.unescape(name.group(1)), html.unescape(value.group(1)) if value else ""))
    return fields


def submit(site: Site, path: str, fields: list[tuple[str, str]]) -> tuple[int, dict[str, str], str]:
    """POST ``fields`` as multipart/form-data (no redirects followed); status, headers, body."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ) + f"--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": site.url,
        })
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_form_from_release_a_submits_to_release_b_and_the_key_stays_secret(site: Site) -> None:
    first = site.deploy()
    assert first.code == 0, first.output
    release_a = site.current()
    status, page_a, _ = site.get("/action")
    assert status == 200
    fields = form_fields(page_a)
    assert any(name.startswith("$ACTION_") for name, _ in fields), fields

    # B: built from the same code, deployed with --json.
    second = site.nextdeploy("deploy", "--json")
    assert second.code == 0, second.output
    release_b = site.current()
    assert release_b != release_a and second.json()["release"] == release_b
    status, headers, body = submit(site, "/action", fields)
    assert status == 303, (status, headers, body)
    assert headers.get("x-nextdeploy-release") == release_b
    assert "echo%3A%20hello" in headers["location"]
    assert "x-nextjs-action-not-found" not in headers

    key_file = site.root / "shared" / "server-actions.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # PM2 keeps each app's env (the key too) in its dump file: private as well.
    assert stat.S_IMODE((site.pm2_home / "dump.pm2").stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 44  # base64 of 32 bytes
    dry_run = site.nextdeploy("deploy", "--dry-run")
    assert dry_run.code == 0, dry_run.output
    outputs = [first.output, second.output, dry_run.output, site.nextdeploy("releases", "--json").output,
               site.nextdeploy("status", "--json").output, site.nextdeploy("logs", "--lines", "200").output]
    assert not [index for index, text in enumerate(outputs) if key in text]
    # Not in any log (builds, preflights, PM2), release, or the ecosystem file.
    assert files_containing(site.root / "logs", key) == []
    assert files_containing(site.root / "releases", key) == []
    assert key not in (site.root / "ecosystem.config.cjs").read_text()
    assert "Failed to find Server Action" not in "".join(
        path.read_text(errors="replace") for path in (site.root / "logs").iterdir() if path.is_file())
