"""Issue 20, item 6: redirects and absolute URLs as with plain ``server.js``.

The example's ``redirects`` variant, deployed for real (PM2, the launcher): a proxy (middleware) and a route
handler redirect with ``new URL("/", request.url)``, and /api/seen echoes the URL and headers the app sees.
The same release's ``server.js`` is then run plainly on another port: every answer must be the same but for
the port, which must be the public one, never a worker's private port. Next builds ``request.url`` from
``HOSTNAME`` and the port it listens on (not from Host), under plain ``server.js`` too: nginx's
``proxy_redirect default`` maps that Location back to the client's host. The client's Host and the
``x-forwarded-*`` headers nginx sends reach the app unchanged.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nextdeploy.host.probe import listen_port
from support.site import Site, tool_env

pytestmark = pytest.mark.integration

NGINX_HEADERS = {"Host": "shop.example:8443", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example",
                 "X-Forwarded-Port": "8443", "X-Forwarded-For": "203.0.113.9"}


def request(port: int, path: str, headers: dict[str, str]) -> tuple[int, str | None, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("location"), response.read().decode()
    finally:
        connection.close()


@contextmanager
def plain_server(release_dir: str, port: int) -> Iterator[None]:
    """``node server.js`` of a release, as without nextdeploy (same HOSTNAME as the deploy's default)."""
    env = {**tool_env(), "PORT": str(port), "HOSTNAME": "127.0.0.1"}
    server = subprocess.Popen(["node", "server.js"], cwd=release_dir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(port, "/api/health", {})[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "plain server.js never answered"
            time.sleep(0.1)
        yield
    finally:
        os.killpg(server.pid, 9)
        server.wait()


def answers(port: int) -> dict[str, object]:
    """What the app answers on ``port``: both redirects (status, Location) and what it sees, with and
    without the headers nginx adds; the port itself written as PORT so two servers compare."""
    seen = {}
    for name, headers in (("direct", {"Host": "app.example"}), ("nginx", NGINX_HEADERS)):
        for path in ("/go-home", "/api/redirect", "/api/seen"):
            status, location, body = request(port, path, headers)
            entry = {"status": status, "location": location,
                     "body": json.loads(body) if path == "/api/seen" else None}
            seen[f"{name} {path}"] = json.loads(json.dumps(entry).replace(str(port), "PORT"))
    return seen


def test_redirects_and_request_urls_carry_the_public_port_as_with_plain_server_js(site: Site) -> None:
    site.deploy("v1", "redirects").expect_ok()
    deployed = answers(site.port)

    # The route handler's absolute Location names the public port (Next writes 127.0.0.1 as localhost); the
    # proxy's same-origin redirect is relative, as Next makes it.
    assert deployed["direct /api/redirect"] == {"status": 307, "location": "http://localhost:PORT/", "body": None}
    assert deployed["direct /go-home"]["location"] == "/"
    # The app sees the client's Host and nginx's x-forwarded-* as sent; x-forwarded-port is the public port
    # when no proxy set one.
    direct = deployed["direct /api/seen"]["body"]
    assert direct == {"url": "http://localhost:PORT/api/seen",
                      "headers": {"host": "app.example", "x-forwarded-host": "app.example",
                                  "x-forwarded-proto": "http", "x-forwarded-port": "PORT",
                                  "x-forwarded-for": "127.0.0.1"}}
    behind_nginx = deployed["nginx /api/seen"]["body"]
    assert behind_nginx["headers"] == {name.lower(): value for name, value in NGINX_HEADERS.items()}
    assert behind_nginx["url"] == "https://localhost:PORT/api/seen"

    # Exactly what plain server.js answers (no private port can hide behind "PORT": it differs from both).
    other_port = listen_port()
    with plain_server(str(site.root / "current"), other_port):
        assert answers(other_port) == deployed
