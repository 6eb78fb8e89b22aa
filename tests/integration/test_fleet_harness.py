"""The fleet tests' harness (tests/support/fleet.py) proved without nextdeploy's fleet code: a tiny node server
started over ssh on each host, real nginx in front, real load; then one host's server stops, and the load and
the page-then-chunks client must see it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nextdeploy.core.config import load_config
from support.fleet import PageThenChunks, failures, load_through, no_failures, running_fleet
from support.nshost import pids_in_namespace, wait_listening

pytestmark = pytest.mark.integration

# A page that references two static files, as a Next.js page does; every answer names its release.
SERVER = """\
const http = require('http')
const fs = require('fs')
const [address, port, release] = process.argv.slice(2)
const files = {
  '/': ['text/html', '<!DOCTYPE html><html><head>'
    + '<link rel="stylesheet" href="/_next/static/css/app-5f1c.css" data-precedence="next"/>'
    + '<script src="/_next/static/chunks/main-app-9a2b.js?dpl=x&amp;v=1" async=""></script>'
    + '</head><body>hello</body></html>'],
  '/_next/static/css/app-5f1c.css': ['text/css', 'body{color:red}'],
  '/_next/static/chunks/main-app-9a2b.js?dpl=x&v=1': ['application/javascript', 'console.log(1)'],
}
fs.writeFileSync('/tmp/server.pid', String(process.pid))
// Cache-Control as Next.js sends it: hashed static files immutable, a 404 never stored.
const immutable = 'public, max-age=31536000, immutable'
const never = 'private, no-cache, no-store, max-age=0, must-revalidate'
http.createServer((request, response) => {
  const file = files[request.url]
  const cache = file && request.url.startsWith('/_next/static/') ? immutable : never
  response.writeHead(file ? 200 : 404, {'content-type': file ? file[0] : 'text/plain',
                                        'cache-control': cache, 'x-nextdeploy-release': release})
  response.end(file ? file[1] : 'not found')
}).listen(Number(port), address)
"""


IMMUTABLE = "public, max-age=31536000, immutable"
NEVER = "private, no-cache, no-store, max-age=0, must-revalidate"


def cache_control(url: str) -> tuple[int, list[str]]:
    """The status of a GET and every Cache-Control header of its answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get_all("Cache-Control") or []
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_all("Cache-Control") or []


def test_the_harness_counts_traffic_and_failures_through_nginx_and_finds_leftovers(tmp_path: Path) -> None:
    with running_fleet(tmp_path, count=3) as fleet:
        hosts = fleet.hosts.hosts
        namespaces = [host.namespace for host in hosts]
        for host in hosts:
            release = host.path("/srv/app/releases/r1")
            release.mkdir(parents=True)
            (release / "server.js").write_text(SERVER)
            host.path("/srv/app/current").symlink_to("releases/r1")
            fleet.hosts.ssh(host.name, f"cd /srv/app/current; setsid node server.js {host.address} {fleet.port} "
                                       f"r1-{host.name} </dev/null >/tmp/server.log 2>&1 &")
        for host in hosts:
            wait_listening(host.address, fleet.port)

        # The config names every host by its ssh alias and its own address, through the test ssh config.
        (tmp_path / "app").mkdir()
        config = load_config(fleet.write_config(tmp_path / "nextdeploy.toml", tmp_path / "app",
                                                rollout={"canary": 1, "batch": 2}))
        assert [(entry.ssh, entry.hostname) for entry in config.hosts] == [(host.name, host.address) for host in hosts]
        assert config.ssh.config == str(fleet.hosts.ssh_config) and config.build.dir == str(tmp_path / "build")
        assert config.server.port == fleet.port and (config.rollout.canary, config.rollout.batch) == (1, 2)

        # Each host: its live release read over ssh, its server the one thing running there.
        assert fleet.live_releases() == {host.name: "r1" for host in hosts}
        assert fleet.live_release("web1", "/srv/nothing") is None
        for host in hosts:
            assert [command for command in fleet.leftovers(host.name).values()] == [
                f"node server.js {host.address} {fleet.port} r1-{host.name}"]

        # Through nginx, a static file is immutable (said once), a missing one keeps the app's "never store".
        assert cache_control(fleet.url + "/_next/static/css/app-5f1c.css") == (200, [IMMUTABLE])
        assert cache_control(fleet.url + "/_next/static/chunks/gone.js") == (404, [NEVER])
        assert cache_control(fleet.url + "/")[1] == [NEVER]

        # Load and the page-then-chunks client through nginx: nothing fails, every host serves.
        with load_through(fleet) as load, PageThenChunks(fleet.url, seconds=60) as client:
            time.sleep(3)
        no_failures(load)
        visits = client.result()
        assert len(visits.visits) >= 10 and visits.chunks_fetched() == 2 * len(visits.visits)
        assert visits.not_ok() == []
        assert set(visits.page_releases()) == {f"r1-{host.name}" for host in hosts}
        assert visits.across_releases() > 0  # chunks land on other hosts than their page's
        served = fleet.served_by()
        assert set(served) == {host.name for host in hosts} and min(served.values()) > 50, served
        not_200 = [line for line in fleet.nginx.access_log() if not line.startswith("200 ")]
        assert len(not_200) == 1 and not_200[0].startswith("404 ") and "/gone.js " in not_200[0], not_200

        # One host's server stops: the load and the client count failures (nginx retries nothing).
        with load_through(fleet) as load, PageThenChunks(fleet.url, seconds=60) as client:
            time.sleep(1)
            fleet.hosts.ssh("web2", "kill $(cat /tmp/server.pid)")
            time.sleep(2)
        assert all(failed > 0 for failed in failures(load).values()), failures(load)
        with pytest.raises(AssertionError, match="requests failed"):
            no_failures(load)
        bad = client.result().not_ok()
        assert bad and {answer.status for answer in bad} == {502}, bad[:3]
        settled = time.monotonic() + 5  # the ssh sessions just run on web2 may still be ending there
        while leftover := fleet.leftovers("web2"):
            assert time.monotonic() < settled, leftover
            time.sleep(0.05)

        # Nothing left running on any host once the servers are stopped, nor in any namespace at the end.
        for host in hosts[::2]:
            assert fleet.leftovers(host.name)
            fleet.hosts.ssh(host.name, "kill $(cat /tmp/server.pid)")
        deadline = time.monotonic() + 10
        while any(fleet.leftovers(host.name) for host in hosts) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {host.name: fleet.leftovers(host.name) for host in hosts} == {host.name: {} for host in hosts}
    assert [pids_in_namespace(namespace) for namespace in namespaces] == [[], [], []]


def test_a_process_on_one_host_is_not_seen_from_another(tmp_path: Path) -> None:
    """Each host has its own PID namespace, as separate servers have: what runs on web1 is not in web2's
    /proc (a recovery on web2 that looks for its own preflight or build processes under /srv/app must not find
    web1's), the harness still names it by its pid here, and a server killed on a host is reaped there."""
    with running_fleet(tmp_path, count=2) as fleet:
        web1, web2 = fleet.hosts["web1"], fleet.hosts["web2"]
        fleet.hosts.ssh("web1", "setsid sleep 3600.5 </dev/null >/dev/null 2>&1 &")
        deadline = time.monotonic() + 10
        while not (mine := [pid for pid, command in fleet.leftovers("web1").items() if command == "sleep 3600.5"]):
            assert time.monotonic() < deadline, fleet.leftovers("web1")
            time.sleep(0.05)
        seen = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        assert "sleep 3600.5" in fleet.hosts.ssh("web1", seen).stdout
        assert "sleep 3600.5" not in fleet.hosts.ssh("web2", seen).stdout
        assert mine[0] in web1.processes() and mine[0] not in web2.processes()
        settled = time.monotonic() + 5  # the ssh sessions just run on web2 may still be ending there
        while leftover := fleet.leftovers("web2"):
            assert time.monotonic() < settled, leftover
            time.sleep(0.05)
        # Killed on the host, its process is reaped there (no zombie waits for this machine's init).
        fleet.hosts.ssh("web1", "pkill -KILL -f '^sleep 3600[.]5$'")
        assert gone_for_good(mine[0], 10), Path(f"/proc/{mine[0]}/status").read_text()
    assert pids_in_namespace(web1.namespace) == [] and pids_in_namespace(web2.namespace) == []


def gone_for_good(pid: int, timeout: float) -> bool:
    """Whether ``pid`` disappears from /proc, reaped (not merely a zombie) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
